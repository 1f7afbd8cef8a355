"""Regenerate the sample knowledge base in knowledge/samples/ (our own text, no third-party content).

    python scripts/make_samples.py

Writes an English PDF manual with an outline (reportlab), a Chinese GBK-encoded text
manual and a bilingual Markdown FAQ, so a fresh checkout has something real to index.
"""

from __future__ import annotations

from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer

OUT = Path(__file__).resolve().parents[1] / "knowledge" / "samples"

MANUAL = [
    ("1 Getting started", [
        "The Aurora X2 is a compact espresso machine for offices of up to twenty people. "
        "Before first use, rinse the water tank, fill it with fresh water up to the MAX mark and run two "
        "empty cycles to flush the boiler.",
        "The machine needs a grounded 220-240 V outlet. It draws at most 1,450 W while heating. "
        "Do not use extension cords.",
    ]),
    ("2 Daily operation", [
        "Press the cup button once for a single espresso (30 ml) and twice for a double (60 ml). "
        "Hold the cup button for three seconds to pour hot water only.",
        "The steam wand is opened by turning the side knob counter-clockwise. Purge the wand for two seconds "
        "before and after frothing milk.",
        "The grinder has twelve settings. Setting 1 is the finest and suits dark roasts; setting 12 is the "
        "coarsest. Change the setting only while the grinder is running.",
    ]),
    ("3 Cleaning and descaling", [
        "Empty the drip tray and the grounds container every day. The red float in the drip tray rises when "
        "it is full.",
        "Descale every 300 cups or when the orange DESCALE light flashes. Use 500 ml of water with one sachet "
        "of citric-acid descaler and run the descaling programme by holding the steam and cup buttons together "
        "for five seconds. The programme takes about 25 minutes.",
        "Never put the water tank or the brew unit in a dishwasher.",
    ]),
    ("4 Troubleshooting", [
        "Error E04 means the water tank is empty or not seated. Refill the tank and push it down until it clicks.",
        "Error E07 means the brew unit is blocked. Switch the machine off, remove the brew unit and rinse it "
        "under lukewarm water.",
        "If coffee runs too fast, choose a finer grinder setting; if it only drips, choose a coarser one.",
        "The warranty covers two years from the date of purchase. Damage caused by limescale is not covered "
        "when the machine was not descaled as described in chapter 3.",
    ]),
]

ZH_MANUAL = """极光 X2 咖啡机使用说明

第一章 安全须知
本机须使用带接地的二百二十至二百四十伏插座，加热时最大功率为一千四百五十瓦。请勿使用延长线。
儿童须在成人看护下使用本机。蒸汽棒在使用后仍然很烫，请勿触摸金属部分。

第二章 日常使用
按一次杯子按钮制作单份浓缩咖啡（三十毫升），按两次制作双份（六十毫升）。
长按杯子按钮三秒钟只出热水。
研磨器共有十二档，一档最细，适合深度烘焙的豆子；十二档最粗。只能在研磨器运转时调节档位。

第三章 清洁与除垢
每天清空滴水盘和咖啡渣盒。滴水盘装满时，红色浮标会升起。
每制作三百杯咖啡或橙色“除垢”指示灯闪烁时，需要除垢。将一袋柠檬酸除垢剂溶于五百毫升水中，
同时按住蒸汽按钮和杯子按钮五秒钟启动除垢程序，整个程序约需二十五分钟。
水箱和冲泡组件不可放入洗碗机清洗。

第四章 故障排除
错误代码 E04 表示水箱缺水或未放好，请加水并将水箱按下直到听到咔哒声。
错误代码 E07 表示冲泡组件堵塞，请关机后取出冲泡组件，用温水冲洗。
咖啡流速过快时，请调细研磨档位；只滴不流时，请调粗研磨档位。
保修期为自购买之日起两年。未按第三章要求除垢而造成的水垢损坏不在保修范围内。
"""

FAQ = """# Aurora X2 FAQ / 常见问题

## Which beans work best? / 用什么咖啡豆最好？

Any fresh whole beans. Oily, very dark beans can clog the grinder; clean it monthly if you use them.
任何新鲜的咖啡豆都可以。油脂较多的深烘豆子容易堵塞研磨器，如果使用这类豆子，请每月清洁一次研磨器。

## Can I use milk alternatives? / 可以用植物奶吗？

Yes. Oat milk froths best; use the barista editions and purge the steam wand afterwards.
可以。燕麦奶的打泡效果最好，使用后请清洗蒸汽棒。

## How loud is it? / 噪音有多大？

About 58 dB while grinding and 45 dB while brewing, measured at one metre.
研磨时约五十八分贝，冲泡时约四十五分贝（距离一米测量）。
"""


def make_pdf(path: Path) -> None:
    styles = getSampleStyleSheet()
    story: list = [Paragraph("Aurora X2 Espresso Machine — User Manual", styles["Title"])]
    for i, (title, paras) in enumerate(MANUAL):
        if i:
            story.append(PageBreak())
        heading = Paragraph(f'<a name="s{i}"/>{title}', styles["Heading1"])
        heading._bookmark = (f"s{i}", title)  # type: ignore[attr-defined]
        story.append(heading)
        for p in paras:
            story.extend([Paragraph(p, styles["BodyText"]), Spacer(1, 6)])

    class Doc(SimpleDocTemplate):
        def afterFlowable(self, flowable):  # type: ignore[no-untyped-def]
            mark = getattr(flowable, "_bookmark", None)
            if mark:
                self.canv.bookmarkPage(mark[0])
                self.canv.addOutlineEntry(mark[1], mark[0], level=0)

    Doc(str(path), pagesize=A4, title="Aurora X2 User Manual", author="kbqa samples").build(story)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_pdf(OUT / "aurora-x2-manual.pdf")
    (OUT / "极光X2说明书.txt").write_bytes(ZH_MANUAL.encode("gbk"))
    (OUT / "faq.md").write_text(FAQ, encoding="utf-8")
    print(f"wrote samples to {OUT}")


if __name__ == "__main__":
    main()
