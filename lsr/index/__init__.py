"""Index storage: the on-disk format, the writer, the memory-mapped reader and the searcher."""

from lsr.index.format import FORMAT_VERSION
from lsr.index.reader import Index, open_index
from lsr.index.searcher import Searcher
from lsr.index.vocabulary import Vocabulary, check_same_vocabulary
from lsr.index.writer import IndexWriter

__all__ = ["FORMAT_VERSION", "Index", "IndexWriter", "Searcher", "Vocabulary", "check_same_vocabulary",
           "open_index"]
