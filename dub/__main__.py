"""`python -m dub ...`: the `dub` command (used under `torchrun -m dub train ...`)."""

from dub.cli import main

if __name__ == "__main__":
    main()
