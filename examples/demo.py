"""The demo behind `make demo`: see btunet/cli/demo.py (also `python -m btunet.cli.demo --help`)."""
from btunet.cli.demo import main

if __name__ == "__main__":
    main()
