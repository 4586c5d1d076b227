"""The ``flotilla`` operator's command line: status, members, leadership, backups, defrag."""
