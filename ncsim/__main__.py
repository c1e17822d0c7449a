"""``python -m ncsim``: the command line."""

from ncsim.cli import main

if __name__ == "__main__":
    main()
