"""FRet: LLM-distilled training data (methods.md §1.3), built as Apache Beam stages."""
