"""kbqa's search as a langchain-core `BaseRetriever`, for LangChain pipelines.

Its own module so that a plain search (`kbqa search`, the API) never imports LangChain's
runnable/callback machinery: `KnowledgeBase.as_langchain_retriever()` imports it on use.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever


class KbqaLangchainRetriever(BaseRetriever):
    """A langchain-core `BaseRetriever` over a HybridRetriever, for LangChain pipelines."""

    retriever: Any
    k: int = 5

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [s.to_document() for s in self.retriever.search(query, k=self.k)]
