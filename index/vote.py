"""The kNN majority vote, re-exported for the index's callers. It is defined once, in :mod:`similarity.vote`
(pure numpy: importing it pulls in neither torch nor faiss), so the API, the report and training agree."""

from similarity.vote import Vote, majority_vote

__all__ = ["Vote", "majority_vote"]
