"""``python run.py with NAME... key=value...``: the reference's entry point, same as ``vlkit run``."""
import sys

from vlkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
