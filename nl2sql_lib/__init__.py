"""nl2sql_lib: the library behind the NL2SQL training lab notebooks."""

__version__ = "0.1.0"
