"""Recall: FT.SEARCH commands for each mode, and parsing their replies into ranked hits."""

from ._queries import SearchRequest, filter_expression, query_terms

__all__ = ["SearchRequest", "filter_expression", "query_terms"]
