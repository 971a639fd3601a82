"""The entry points on top of every package: the task bodies the DAGs call (``tasks``) and the
command line behind the Makefile's verbs (``cli``)."""
