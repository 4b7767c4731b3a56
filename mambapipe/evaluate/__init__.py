"""The evaluate step's tasks: cnn_dailymail-style summarization scored with ROUGE, and a speed benchmark."""
