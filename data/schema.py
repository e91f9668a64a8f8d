"""PG-19's row schema: every source yields exactly these columns, one row per book."""
from datasets import Features, Value

PG19_FEATURES = Features(
    {
        "short_book_title": Value("string"),
        "publication_date": Value("int32"),
        "url": Value("string"),
        "text": Value("string"),
    }
)
PG19_COLUMNS = list(PG19_FEATURES)
