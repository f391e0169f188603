"""Reading labelled texts from CSV files, for classification and clustering.

A file has a header row naming a `text` column and a label column, `label` or
`category` (Banking77's name); other columns are ignored. Fields are quoted as
the `csv` module (and pandas, and spreadsheets) write them.
"""

import csv
import dataclasses
import os

from gecko_jax.errors import UserError

LABEL_COLUMNS = ("label", "category")


@dataclasses.dataclass(frozen=True)
class LabeledTexts:
    """Texts with one label each, in file order.

    Attributes:
      texts: the texts.
      labels: their labels, as the strings in the file.
      path: the file read.
    """

    texts: list[str]
    labels: list[str]
    path: str


def read_labeled_csv(path: str) -> LabeledTexts:
    """Reads a CSV file of texts and labels.

    Args:
      path: the file.

    Returns:
      Its rows.

    Raises:
      UserError: the file is missing, not UTF-8, lacks a `text` or label
        column, has an empty text or label (named as file:line), or no rows.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            label_column = next((c for c in LABEL_COLUMNS if c in header), None)
            if "text" not in header or label_column is None:
                raise UserError(
                    f"{path}:1: the header must name a 'text' column and a"
                    f" 'label' or 'category' column; it has {header}"
                )
            texts, labels = [], []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                text, label = row.get("text"), row.get(label_column)
                if text is None or label is None:
                    raise UserError(f"{where}: fewer columns than the header")
                if not text.strip():
                    raise UserError(f"{where}: the text is empty")
                if not label.strip():
                    raise UserError(f"{where}: the {label_column} is empty")
                texts.append(text)
                labels.append(label)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise UserError(f"{path}: malformed CSV ({e})") from None
    if not texts:
        raise UserError(f"{path}: no rows after the header")
    return LabeledTexts(texts, labels, path)


def write_labeled_csv(path: str, texts: list[str], labels: list[str]) -> None:
    """Writes texts and labels with a `text,label` header.

    Args:
      path: the file to write (its folder must exist).
      texts: the texts.
      labels: one label per text.
    """
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
