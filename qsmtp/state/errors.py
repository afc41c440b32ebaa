"""The one error every state backend raises when its store can't be used."""


class StateUnavailable(Exception):
    """The store (SQLite file or Redis server) could not be used just now."""
