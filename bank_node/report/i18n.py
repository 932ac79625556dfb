"""The report's words in English and Chinese.

Keys are the English text (a format template where values go in), or a short name for the
longer sentences. Chinese uses the terms Chinese credit teams write: AUC, KS, 基尼系数,
信息值 (IV), 证据权重 (WOE), 违约概率 (PD), 评分卡, 坏样本率, 提升度. A Chinese text that
is missing is an error, not an English fallback (tests build the page in both).
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "zh")

# The longer English sentences, by name.
EN: dict[str, str] = {
    "subtitle": "Privacy-preserving joint model of the bank and the credit bureau: validation "
    "report for the credit committee.",
    "train-fallback": "No validation rows: this model was trained without holding rows back, "
    "so every measure and figure below is on the training rows the model was fitted to and "
    "will flatter it.",
    "on-validation": "Measures and figures are on the {n:,} validation rows, held back from "
    "training, unless marked otherwise.",
    "not-converged": "Not converged: the loss was still falling at the last epoch. Train "
    "again with more epochs before relying on this model.",
    "metrics-explain": "AUC: the chance that a random bad scores riskier than a random good "
    "(0.5 is chance). KS: the largest gap between the cumulative shares of bads and goods. "
    "Log-loss: lower is better; it also rewards calibrated probabilities.",
    "no-bank-only": "No bank-only model was trained for comparison (train with "
    "--compare-bank-only to see what the bureau adds).",
    "auc-mismatch": "model.json records a {split} AUC of {recorded}, but evaluation.csv gives "
    "{got}: the two files may come from different training runs.",
    "one-class": "The evaluated rows hold only one class, so there is no ROC or KS curve to draw.",
    "ks-alt": "KS curve: cumulative percentages of bads and goods by share of clients ranked "
    "riskiest first; KS {ks:.3f} at {at:.0f}% of the population",
    "distribution-alt": "Score distribution: histograms of the joint model's predicted "
    "probability of default for goods and for bads",
    "distribution-caption": "Predicted probability of default for goods and bads ({scope}); "
    "each histogram is scaled to unit area. The less they overlap, the better the separation.",
    "lift-intro": "Clients sorted by the joint model's predicted risk and cut into {groups} "
    "equal groups; decile 1 is the riskiest. Overall bad rate {rate}; lift is a decile's bad "
    "rate over it.",
    "gain-alt": "Gain chart: cumulative percentage of bads captured against percentage of "
    "clients ranked riskiest first, joint model",
    "iv-none": "No information-value table was given, so the features' individual strength "
    "is not shown.",
    "iv-intro": "{n} features{source}: {bank} of the bank's and {bureau} of the bureau's, by "
    "information value.",
    "iv-bands": "Usual bands of information value — {bands}. IV is measured one feature at a "
    "time; the model's weights account for their overlap.",
    "history-alt": "Training history: training and validation loss per epoch over {n} epochs",
    "history-caption": "Loss per epoch; the kept epoch is the one with the lowest validation loss.",
    "footer": "Generated {when} by bank_node.report from model.json and evaluation.csv. The "
    "bureau's features never left the bureau; all figures are on the bank's own matched "
    "clients.",
    "sign-explain": "A weight whose sign disagrees with the feature's own WOE trend usually "
    "comes from features that overlap (collinearity); review before approval.",
    "no-sign-checks": "No sign checks: give the IV table of a `bank-node iv` run (its "
    ".bins.json beside it) to compare the bank's weights with the WOE trends.",
    "weights-explain": "Weights of the bank's model columns on the log-odds of default, on "
    "standardised inputs; the calibrated weight includes the Platt slope the probabilities "
    "use. A positive weight raises the probability of default. The bureau's weights stay at "
    "the bureau.",
    "no-scorecard": "No scorecard yet: make one with `bank-node scorecard`.",
    "gain-not-established": "With {bads:,} bads among the evaluated rows, the AUC the bureau "
    "adds is not established: its 95% interval ({low} to {high}, DeLong's paired test) "
    "reaches zero. Evaluate on more rows before relying on it.",
    "scorecard-explain": "The bank's points per bin (a number's points are those of its "
    "bin's median); the bureau keeps its own points. Each applicant's points in `predict` "
    "come from the same calibrated log-odds as the probability, so the two always agree.",
}

ZH: dict[str, str] = {
    "subtitle": "银行与征信机构的隐私保护联合模型：提交信贷审批委员会的模型验证报告。",
    "train-fallback": "没有验证集：该模型训练时未留出样本，下列所有指标和图表均基于训练样本，"
    "会高估模型效果。",
    "on-validation": "除另有说明外，指标和图表均基于训练时留出的 {n:,} 个验证集样本。",
    "not-converged": "模型未收敛：最后一轮训练时损失仍在下降。请增加训练轮次后重新训练，"
    "再使用该模型。",
    "metrics-explain": "AUC：随机抽取一个坏样本和一个好样本，坏样本被评为风险更高的概率"
    "（0.5 相当于随机）。KS：坏样本与好样本累计占比之差的最大值。对数损失：越低越好，"
    "同时反映概率是否校准。",
    "no-bank-only": "未训练仅行内数据模型作对比（训练时加 --compare-bank-only 可查看征信"
    "数据带来的提升）。",
    "auc-mismatch": "model.json 记录的{split} AUC 为 {recorded}，而 evaluation.csv 计算得 "
    "{got}：两个文件可能来自不同的训练。",
    "one-class": "评估样本只有一类，无法绘制 ROC 曲线和 KS 曲线。",
    "ks-alt": "KS 曲线：按风险从高到低排序的客户占比下，坏样本和好样本的累计占比；"
    "KS 为 {ks:.3f}，位于总体的 {at:.0f}%",
    "distribution-alt": "评分分布：联合模型预测违约概率在好样本和坏样本中的直方图",
    "distribution-caption": "好样本与坏样本的预测违约概率（{scope}）；各直方图面积归一。"
    "重叠越少，区分能力越强。",
    "lift-intro": "按联合模型预测风险对客户排序，等分为 {groups} 组；第 1 组风险最高。"
    "总体坏样本率 {rate}；提升度为各组坏样本率与总体坏样本率之比。",
    "gain-alt": "累计捕获率图：按风险从高到低排序的客户占比下，累计捕获的坏样本占比，联合模型",
    "iv-none": "未提供信息值（IV）表，因此不显示各特征的单变量区分能力。",
    "iv-intro": "共 {n} 个特征{source}：银行 {bank} 个、征信机构 {bureau} 个，按信息值排序。",
    "iv-bands": "信息值常用分档 — {bands}。IV 逐个特征计算；模型权重已考虑特征之间的重叠。",
    "history-alt": "训练过程：{n} 轮训练中每轮的训练集和验证集损失",
    "history-caption": "每轮损失；保留验证集损失最低的一轮。",
    "footer": "由 bank_node.report 根据 model.json 和 evaluation.csv 于 {when} 生成。征信机构"
    "的特征从未离开征信机构；所有数字均基于银行自有的匹配客户。",
    "sign-explain": "权重符号与该特征自身 WOE 趋势相反，通常源于特征之间的重叠（共线性）；"
    "审批前请复核。",
    "no-sign-checks": "未做符号检验：提供 `bank-node iv` 生成的 IV 表（及其旁边的 .bins.json），"
    "即可将银行权重与 WOE 趋势对比。",
    "weights-explain": "银行各模型列对违约对数几率的权重（输入已标准化）；校准后权重包含"
    "概率所用的 Platt 斜率。权重为正表示提高违约概率。征信机构的权重保留在征信机构。",
    "no-scorecard": "尚未生成评分卡：请先运行 `bank-node scorecard`。",
    "scorecard-explain": "银行各分箱的分值（数值特征取其分箱中位数的分值）；征信机构的分值"
    "保留在征信机构。`predict` 输出的每位申请人的分数与违约概率来自同一个校准后的对数几率，"
    "二者始终一致。",
    # short texts, keyed by their English
    "{n} run": "已训练 {n} 轮",
    ", epoch {epoch} kept": "，保留第 {epoch} 轮",
    "Model ID": "模型编号",
    "Created (UTC)": "创建时间（UTC）",
    "Bank": "银行",
    "Matched clients": "匹配客户数",
    "{total:,} ({train:,} train, {validation:,} validation)": "{total:,}（训练集 {train:,}，"
    "验证集 {validation:,}）",
    "Bank features": "银行特征",
    "{n} ({columns} model columns)": "{n} 个（{columns} 个模型列）",
    "Bureau features": "征信特征",
    "Epochs": "训练轮次",
    "Label": "标签",
    "AUC, {split}": "AUC（{split}）",
    "Gini (2·AUC − 1)": "基尼系数（2·AUC − 1）",
    "Bad rate ({bads:,} of {n:,})": "坏样本率（{n:,} 个中 {bads:,} 个）",
    "Bads in the riskiest 10%": "风险最高 10% 客户捕获的坏样本",
    "AUC added by the bureau": "征信数据带来的 AUC 提升",
    "95% CI {low} to {high}": "95% 置信区间 {low} 至 {high}",
    "gain-not-established": "评估样本中仅有 {bads:,} 个坏样本，征信数据带来的 AUC 提升尚不"
    "确定：其 95% 置信区间（{low} 至 {high}，DeLong 配对检验）包含零或负值。请在更多样本上"
    "评估后再作依据。",
    "Joint model (bank + bureau)": "联合模型（银行 + 征信）",
    "Bank-only model": "仅行内数据模型",
    " (from model.json)": "（取自 model.json）",
    "What the bureau adds (joint − bank-only; log-loss: bank-only − joint)": (
        "征信数据的增益（联合 − 仅行内；对数损失：仅行内 − 联合）"
    ),
    "What the joint model adds over: {name}": "联合模型相对“{name}”的增益",
    "Discrimination and calibration": "区分能力与校准",
    "Model": "模型",
    "Split": "样本集",
    "Clients": "客户数",
    "Gini": "基尼系数",
    "Log-loss": "对数损失",
    "{split} rows, {n:,} clients": "{split}，{n:,} 个客户",
    "ROC and KS": "ROC 曲线与 KS",
    "ROC curve: true positive rate against false positive rate for the joint model": "ROC 曲线："
    "联合模型的真正例率对假正例率",
    " (AUC {joint}) and the bank-only model (AUC {bank})": "（AUC {joint}）及仅行内数据模型"
    "（AUC {bank}）",
    " (AUC {joint})": "（AUC {joint}）",
    ", with the diagonal of a random score": "，以及随机评分的对角线",
    "ROC curve ({scope}). The further above the diagonal, the better.": "ROC 曲线（{scope}）。"
    "离对角线越远越好。",
    "KS curve ({scope}). The vertical bar marks the largest gap (the KS).": "KS 曲线（{scope}）。"
    "竖线标出最大差距，即 KS 值。",
    "Score distribution": "评分分布",
    "Lift and gain by decile": "十分位提升度与累计捕获率",
    " and bank-only model": "及仅行内数据模型",
    ", with random and perfect lines": "，以及随机和完美模型的参考线",
    "Gain chart ({scope}).": "累计捕获率图（{scope}）。",
    " (riskiest)": "（风险最高）",
    "Decile": "十分位",
    "Predicted PD": "预测违约概率（PD）",
    "Bads": "坏样本数",
    "Bad rate": "坏样本率",
    "Cumulative % of bads": "累计坏样本占比",
    "Lift": "提升度",
    "Cumulative lift": "累计提升度",
    " (from {name})": "（取自 {name}）",
    "Feature": "特征",
    "Party": "数据方",
    "Kind": "类型",
    "Bins": "分箱数",
    "IV": "信息值 IV",
    "Strength": "区分能力",
    "Training history": "训练过程",
    "model.json records no training history.": "model.json 未记录训练过程。",
    "Seed": "随机种子",
    "Batch size": "批大小",
    "Max epochs": "最大轮次",
    "Validation fraction": "验证集比例",
    "Paillier key bits": "Paillier 密钥位数",
    "Early-stopping patience": "早停耐心轮数",
    "Optimizer": "优化器",
    "{name}, learning rate {rate} (divided by 1 + {decay} x epoch), {penalty} penalty {alpha}": (
        "{name}，学习率 {rate}（按 1 + {decay} × 轮次递减），{penalty} 正则 {alpha}"
    ),
    "Bureau features used: {names}.": "使用的征信特征：{names}。",
    "Joint credit model {id}": "联合信贷模型 {id}",
    "Information value of the features": "特征信息值（IV）",
    "The bank’s weights": "银行侧模型权重",
    "Scorecard": "评分卡",
    "model.json records no weights.": "model.json 未记录权重。",
    "agrees with WOE": "与 WOE 趋势一致",
    "contradicts WOE": "与 WOE 趋势相反",
    "WOE trend unclear": "WOE 趋势不明确",
    "(intercept)": "（截距）",
    "Weight sign contradicts the WOE trend": "权重符号与 WOE 趋势相反",
    "Model column": "模型列",
    "Weight": "权重",
    "Calibrated weight": "校准后权重",
    "Odds ratio per unit": "每单位比值比",
    "Sign check": "符号检验",
    "(base points)": "（基础分）",
    "Scaling: {base} points at odds {odds:g}:1 (good:bad); {pdo:g} points double the odds.": (
        "刻度：好坏比 {odds:g}:1 时为 {base} 分；每增加 {pdo:g} 分，好坏比翻倍（PDO）。"
    ),
    "Bin": "分箱",
    "Points": "分值",
    "Joint model": "联合模型",
    "{label} (AUC {auc:.3f})": "{label}（AUC {auc:.3f}）",
    "Random": "随机",
    "False positive rate (share of goods flagged)": "假正例率（被标记的好样本占比）",
    "True positive rate (share of bads flagged)": "真正例率（被标记的坏样本占比）",
    "ROC curve": "ROC 曲线",
    "Cumulative % of goods": "累计好样本占比",
    "KS = {ks:.3f}\nat {at:.0f}% of the population\n(PD ≥ {threshold:.3f})": "KS = {ks:.3f}\n"
    "位于总体的 {at:.0f}%\n（违约概率 ≥ {threshold:.3f}）",
    "% of clients, riskiest first (score deciles)": "客户占比（%，按风险从高到低，评分十分位）",
    "Cumulative %": "累计占比（%）",
    "KS curve (joint model)": "KS 曲线（联合模型）",
    "Goods (y = 0)": "好样本（y = 0）",
    "Bads (y = 1)": "坏样本（y = 1）",
    "{label}: {count:,} clients, mean PD {mean:.3f}": "{label}：{count:,} 个客户，平均违约概率 "
    "{mean:.3f}",
    "Predicted probability of default (joint model)": "预测违约概率（联合模型）",
    "Density": "密度",
    "Score distribution of goods and bads": "好坏样本的评分分布",
    "Joint model, by decile": "联合模型（按十分位）",
    "Perfect": "完美模型",
    "% of clients, riskiest first": "客户占比（%，按风险从高到低）",
    "% of all bads captured": "捕获的坏样本占比（%）",
    "Gain chart": "累计捕获率图",
    "Training loss": "训练集损失",
    "Validation loss": "验证集损失",
    "Kept epoch ({epoch})": "保留轮次（第 {epoch} 轮）",
    "Epoch": "轮次",
    "Loss (Taylor approximation)": "损失（泰勒近似）",
    # values shown in cells
    "validation": "验证集",
    "train": "训练集",
    "bank": "银行",
    "bureau": "征信机构",
    "numeric": "数值型",
    "category": "类别型",
    "": "",
    "not predictive": "无预测力",
    "unmeasured (too few defaults for the noise)": "未能测得（违约样本太少，"
    "不足以越过征信平台加的噪声）",
    "weak": "弱",
    "medium": "中等",
    "strong": "强",
    "suspicious (check for leaks)": "可疑（请检查是否有信息泄露）",
    "unknown": "未知",
}


class Texts:
    """``t(key, **values)``: the text for ``key`` in this language, formatted."""

    def __init__(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}")
        self.lang = lang
        self.html_lang = "zh-Hans" if lang == "zh" else "en"

    def __call__(self, key: str, **values: Any) -> str:
        if self.lang == "zh":
            template = ZH[key]  # a KeyError is a missing translation: tests catch it
        else:
            template = EN.get(key, key)
        return template.format(**values) if values else template
