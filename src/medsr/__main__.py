"""``python -m medsr …``: the ``medsr`` command (:func:`medsr.cli.main`)."""

from medsr.cli import main

if __name__ == "__main__":
    main()
