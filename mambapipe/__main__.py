from mambapipe.cli import main

main()
