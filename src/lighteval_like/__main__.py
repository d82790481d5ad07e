"""`python -m lighteval_like ...`: the same command line as `lighteval-like ...`."""

from lighteval_like.cli import main

if __name__ == "__main__":
    main()
