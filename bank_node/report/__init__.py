"""A self-contained HTML report of a trained joint model, for a bank's credit committee,
in English or Chinese.

``build_report`` reads what ``bank-node train`` wrote to the model directory (``model.json``
and ``evaluation.csv``, see docs/model-format.md) and, optionally, an information-value
table, and writes ONE HTML file: inline CSS, figures as base64 PNGs, no scripts and no
external resources, so it can be mailed, archived or printed as it is.

Every measure and figure is on the validation split (the rows held back from training);
when there are none, on the training rows, and the page says so. Sections: inputs (reading
the files), measures (lift, KS, gain), figures, governance (weights, scorecard, sign
checks), i18n (the words in both languages), markup (HTML pieces), build (the page).
"""

from .build import build_report, main
from .i18n import LANGUAGES
from .measures import iv_band, ks_curve, lift_table

__all__ = ["LANGUAGES", "build_report", "iv_band", "ks_curve", "lift_table", "main"]
