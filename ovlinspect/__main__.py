"""`python -m ovlinspect` entry point (no I/O of its own)."""

from ovlinspect.cli import main

if __name__ == "__main__":
    main()
