"""FRet: LLM-distilled training data (Gecko, arXiv 2403.20327), built as Apache Beam stages."""
