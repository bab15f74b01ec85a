"""The operator's command line: accounts, tokens, invites, numbers, backups.

* ``actions.py``: every write the command line makes (check -> store -> commit -> publish).
* ``commands.py``: the ``chatserver users|tokens|invites|stats`` sub-commands.
* ``backup.py``: ``chatserver backup|restore`` for SQLite and PostgreSQL.
"""
