"""A helper module, imported by ``helper.py`` from the same folder."""


def greeting() -> str:
    return "Hello from a helper module"
