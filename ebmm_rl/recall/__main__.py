"""``python -m ebmm_rl.recall``: see :mod:`ebmm_rl.recall.cli`."""

from ebmm_rl.recall.cli import main

if __name__ == "__main__":
    main()
