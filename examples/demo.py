"""The demo behind `make demo`: see btunet/demo.py (also `python -m btunet.demo --help`)."""
from btunet.demo import main

if __name__ == "__main__":
    main()
