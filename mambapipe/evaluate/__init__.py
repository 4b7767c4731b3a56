"""The evaluate step's tasks: cnn_dailymail-style summarization scored with ROUGE, and a speed benchmark."""

# metrics.json's `task` for the summarize task, by which the sweep summary tells how a row's tokens/s were timed.
SUMMARIZE_TASK = "summarize"
# The file every task writes its results to, at the artifact's root (the runner copies it into the run directory).
METRICS_FILE = "metrics.json"
