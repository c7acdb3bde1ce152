"""Commands of this area; `register(cli)` adds them to the main group."""


def register(cli):
    pass
