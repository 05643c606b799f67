"""`python -m exai` is the `exai` command."""

from exai.cli import main

main()
