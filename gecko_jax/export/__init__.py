"""Writing models out in other tools' formats (sentence-transformers folders)."""
