"""``python -m bindf`` is the ``bindf`` command."""

from .cli import command

if __name__ == "__main__":  # importing this module (API doc tools do) runs nothing
    command()
