"""``python -m cowsync``: the same command line as the ``cowsync`` script."""

from cowsync.cli import main

if __name__ == "__main__":
    main()
