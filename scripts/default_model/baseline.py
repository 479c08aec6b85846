"""Character uni+bigram multinomial naive Bayes baseline."""
from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.naive_bayes import MultinomialNB


def train_nb(texts, labels, alpha=1.0):
    vec = CountVectorizer(analyzer="char", ngram_range=(1, 2), lowercase=True)
    X = vec.fit_transform(texts)
    nb = MultinomialNB(alpha=alpha).fit(X, np.asarray(labels))
    return lambda ts: nb.predict(vec.transform(ts))
