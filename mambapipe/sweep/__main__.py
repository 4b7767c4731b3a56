import sys

from mambapipe.sweep.cli import main

sys.exit(main())
