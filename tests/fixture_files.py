"""Builds test documents at test time (no third-party documents are checked in).

Every good file carries a distinctive fact so retrieval tests can ask about it;
`build_mixed_folder` returns filename → fact phrase, or "FAIL: <reason keyword>"
for the files that must be refused.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FAIL_PREFIX = "FAIL: "

ZH_MANUAL = """第一章 产品概述

本设备的额定电压为二百二十伏特，最大功率为一千五百瓦。本产品适用于家庭和小型办公场所，不得用于工业生产环境。使用前请仔细阅读本说明书，并妥善保管，以便日后查阅。

第二章 安装说明

安装时应选择平稳、干燥、通风良好的位置，设备四周至少保留十五厘米的散热空间。电源插座必须可靠接地，不要与其他大功率电器共用同一个插座。如果电源线损坏，必须由制造商或其维修部门更换，以免发生危险。

第三章 日常维护

每次使用完毕后，请先关闭电源开关并拔下插头，待设备完全冷却后再进行清洁。外壳可以用柔软的湿布擦拭，切勿使用汽油、酒精或其他腐蚀性溶剂。过滤网建议每两个星期清洗一次，清洗后必须晾干才能重新装回。长时间不使用时，应将设备放置在阴凉干燥处，并用防尘罩覆盖。

第四章 故障排除

如果设备无法启动，请首先检查电源插头是否插好、保险丝是否熔断。如果运行时出现异常噪音或者焦糊气味，应立即停止使用并联系售后服务中心。指示灯持续闪烁通常表示温度过高，此时设备会自动进入保护状态，冷却十分钟后即可恢复正常工作。请不要自行拆卸设备，非专业人员拆机造成的损坏不在保修范围之内。

第五章 保修条款

本产品自购买之日起享受两年免费保修服务，主要部件享受五年保修。保修期内凭有效购物发票和保修卡，可在全国任何一家授权服务网点获得维修。人为损坏、私自改装以及不可抗力造成的故障，不属于免费保修范围。客户服务热线为四零零八八八六六六六，工作时间为每天上午八点至晚上八点。
"""
ZH_FACT = "本设备的额定电压为二百二十伏特，最大功率为一千五百瓦。"

ZH_BACKUP = """数据库备份与恢复

系统每天凌晨两点自动执行一次全量备份，备份文件保存在服务器的独立磁盘上，默认保留最近三十天的记录。管理员也可以在控制台中随时发起手动备份，备份完成后系统会发送邮件通知。

恢复数据之前，请先停止所有正在运行的业务服务，避免新的写入操作与恢复过程冲突。选择需要恢复的备份时间点后，系统会校验文件的完整性，校验通过才会开始导入。整个过程通常需要十到二十分钟，具体时间取决于数据量的大小。

常见问题：如果恢复过程中提示磁盘空间不足，请清理临时目录或者扩容后重试；如果提示版本不兼容，说明备份文件来自较旧的软件版本，需要先使用迁移工具进行转换。遇到无法解决的问题，请携带日志文件联系技术支持团队，我们会在一个工作日内给予答复。
"""
MOJIBAKE_FACT = "管理员也可以在控制台中随时发起手动备份"

BIG5_TEXT = """產品保固說明

本產品的保固期限為三年，自購買之日起計算。保固期間內若發生非人為損壞，本公司將免費提供維修服務。
請妥善保存購買憑證，以便日後查驗。維修送件前，請先備份裝置中的重要資料。
"""
BIG5_FACT = "本產品的保固期限為三年"

UTF16_TEXT = (
    "Emergency contacts\n\nThe emergency hotline number is 400-800-1234.\n"
    "紧急热线电话为四零零八零零一二三四，全天二十四小时有人值守。\n"
)
UTF16_FACT = "The emergency hotline number is 400-800-1234."

SCAN_FACT = "The scanner calibration code is ZETA-4471."
ZH_SCAN_TEXT = "扫描仪的校准代码是泽塔四四七一。"

MANUAL_PAGES = [
    "1 Introduction\nThis manual describes the installation and care of the KX-7 water pump. Read every "
    "section before connecting the pump to the mains, and keep the manual near the pump.",
    "2 Installation\nPlace the pump on a level, dry surface. The pump must be primed with 2 litres of water "
    "before the first start, otherwise the seals run dry and wear out within minutes. Tighten the inlet "
    "hose by hand only.",
    "3 Maintenance\nClean the inlet filter every month. Replace the carbon brushes after 900 operating hours "
    "or when the motor starts to spark.",
]
MANUAL_OUTLINE = [(0, "1 Introduction", 0), (0, "2 Installation", 1), (1, "2.1 Priming", 1), (0, "3 Maintenance", 2)]
MANUAL_FACT = "primed with 2 litres of water"

# File → page of its fact, for retrieval tests that check citations.
FACT_PAGES: dict[str, int] = {"manual.pdf": 2, "scanned.pdf": 1, "slides.pptx": 2}

_LATIN_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
_CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)


class FontUnavailableError(RuntimeError):
    """No font on this machine can draw the requested (Chinese) text; tests skip."""


def _has_cjk(text: str) -> bool:
    return any("\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in text)


def find_font(cjk: bool, size: int) -> ImageFont.FreeTypeFont:
    """A TrueType font for Pillow; Pillow's built-in font for Latin if nothing is installed."""
    candidates = list(_CJK_FONTS if cjk else _LATIN_FONTS)
    if shutil.which("fc-match"):
        query = "sans:lang=zh-cn" if cjk else "sans"
        found = subprocess.run(["fc-match", "-f", "%{file}", query], capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip())
    for candidate in candidates:
        cjk_capable = "wqy" in candidate.lower() or "cjk" in candidate.lower()
        if candidate and Path(candidate).is_file() and (cjk_capable or not cjk):
            return ImageFont.truetype(candidate, size)
    if cjk:
        raise FontUnavailableError("no CJK font found (apt-get install fonts-wqy-zenhei)")
    return ImageFont.load_default(size=size)  # type: ignore[return-value]


# ------------------------------------------------------------------ PDF


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Wrap a line to `width` points: at spaces for Latin, at any character for CJK."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    lines: list[str] = []
    current = ""
    for token in ([*text] if _has_cjk(text) else text.split(" ")):
        sep = "" if _has_cjk(text) or not current else " "
        if current and stringWidth(current + sep + token, font, size) > width:
            lines.append(current)
            current = token
        else:
            current += sep + token
    return [*lines, current] if current else lines


def make_text_pdf(
    path: Path, pages: list[str], outline: bool, outline_entries: list[tuple[int, str, int]] | None = None
) -> Path:
    """A text PDF, one string per page (lines wrap, so extraction must rejoin them).

    Chinese pages use reportlab's built-in CID font STSong-Light. With `outline`, the
    bookmarks are `outline_entries` (level, title, 0-based page) or each page's first line.
    """
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=True)  # same bytes on every run
    entries = outline_entries or [(0, page.split("\n", 1)[0], i) for i, page in enumerate(pages)]
    for index, page in enumerate(pages):
        font = "STSong-Light" if _has_cjk(page) else "Helvetica"
        pdf.setFont(font, 11)
        y = A4[1] - 72
        for line in page.split("\n"):
            for wrapped in _wrap(line, font, 11, A4[0] - 144) or [""]:
                pdf.drawString(72, y, wrapped)
                y -= 15
        if outline:
            for number, (level, title, target) in enumerate(entries):
                if target == index:
                    pdf.bookmarkPage(f"b{number}")
                    pdf.addOutlineEntry(title, f"b{number}", level=level)
        pdf.showPage()
    pdf.save()
    return path


def text_image(text: str, size: int = 36) -> Image.Image:
    """Black text on white, ~200 dpi scale, for a scanned page."""
    font = find_font(_has_cjk(text), size)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (right - left + 2 * size * 2, bottom - top + 2 * size * 3), "white")
    ImageDraw.Draw(image).text((size * 2 - left, size * 3 - top), text, font=font, fill="black")
    return image


def make_scanned_pdf(path: Path, text: str, text_pages: list[str] | None = None) -> Path:
    """Page 1 is an image of `text` with no text layer; `text_pages` follow as normal text pages."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    image = text_image(text)
    width, height = image.width * 72 / 200, image.height * 72 / 200  # 200 dpi when rendered at 200 dpi
    pdf = canvas.Canvas(str(path), pagesize=(width, height), invariant=True)
    pdf.drawImage(ImageReader(image), 0, 0, width=width, height=height)
    pdf.showPage()
    for page in text_pages or []:
        pdf.setPageSize((612, 792))
        pdf.setFont("Helvetica", 11)
        for n, line in enumerate(_wrap(page, "Helvetica", 11, 468)):
            pdf.drawString(72, 720 - 15 * n, line)
        pdf.showPage()
    pdf.save()
    return path


def make_corrupt_pdf(path: Path) -> Path:
    """Starts like a PDF and ends with %%EOF, but the body is noise: no parser can read it."""
    noise = random.Random(11).randbytes(3000)
    path.write_bytes(b"%PDF-1.7\n" + noise + b"\ntrailer\n<< /Root 99 0 R >>\n%%EOF\n")
    return path


def make_truncated_pdf(path: Path) -> Path:
    """A real PDF cut to its first 40%, as after an interrupted download."""
    make_text_pdf(path, MANUAL_PAGES, outline=True, outline_entries=MANUAL_OUTLINE)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path


def make_encrypted_pdf(path: Path, user_password: str = "secret") -> Path:
    """A text PDF encrypted with pypdf; `user_password=""` gives an owner-password-only PDF."""
    from pypdf import PdfReader, PdfWriter

    plain = path.with_suffix(".plain.pdf")
    make_text_pdf(plain, ["Encrypted page. The vault code is KAPPA-19."], outline=False)
    writer = PdfWriter()
    writer.append(PdfReader(str(plain)))
    writer.encrypt(user_password=user_password, owner_password="owner-pw")
    with path.open("wb") as fh:
        writer.write(fh)
    plain.unlink()
    return path


# ------------------------------------------------------------------ office


DOCX_FACT = "The backup generator switches on automatically after 8 seconds of power loss."
PPTX_FACT = "Revenue grew by 17 percent in the third quarter."
XLSX_FACT = "approved by the finance committee"


def make_docx(path: Path) -> Path:
    """Title, H1/H2 headings, a table under a heading; the fact is under "Power Supply > Backup Generator"."""
    import docx

    document = docx.Document()
    document.add_paragraph("Site handbook. Keep this document at the reception desk.")
    document.add_heading("Power Supply", level=1)
    document.add_paragraph("The building is fed by two independent mains lines.")
    document.add_heading("Backup Generator", level=2)
    document.add_paragraph(DOCX_FACT)
    table = document.add_table(rows=3, cols=2)
    cells = [("Item", "Value"), ("Fuel tank", "400 litres"), ("Test run", "Mondays")]
    for row, (name, value) in zip(table.rows, cells, strict=True):
        row.cells[0].text, row.cells[1].text = name, value
    document.add_heading("Fire Safety", level=1)
    document.add_paragraph("Fire extinguishers are inspected every six months.")
    document.save(str(path))
    return path


def make_pptx(path: Path) -> Path:
    """Three slides with titles; slide 2 carries the fact and speaker notes."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    content = [
        ("Company Overview", "We build water pumps for small farms."),
        ("Quarterly Results", PPTX_FACT),
        ("Next Steps", "Open a second factory in the spring."),
    ]
    for title, body in content:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text_frame.text = body
    notes = deck.slides[1].notes_slide.notes_text_frame
    notes.text = "Mention the new distributor contracts."
    box = deck.slides[2].shapes.add_textbox(Inches(1), Inches(6), Inches(6), Inches(1))
    box.text_frame.text = "Budget owner: Dana Whitfield"
    deck.save(str(path))
    return path


def make_xlsx(path: Path, rows: int = 30) -> Path:
    """Sheet "Budget 2024" with a header and `rows` rows; a second sheet "Contacts"."""
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Budget 2024"
    sheet.append(["Item", "Amount", "Note"])
    for n in range(1, rows + 1):
        note = f"Conference travel, {XLSX_FACT}" if n == 7 else f"routine expense {n}"
        sheet.append([f"item {n}", 100 * n, note])
    contacts = workbook.create_sheet("Contacts")
    contacts.append(["Name", "Role"])
    contacts.append(["Lena Park", "Treasurer"])
    workbook.save(str(path))
    return path


# ------------------------------------------------------------------ text files


def make_gbk_txt(path: Path, text: str = ZH_MANUAL) -> Path:
    path.write_bytes(text.encode("gbk"))
    return path


def mojibake(text: str, lost: str = "ignore") -> str:
    """UTF-8 bytes read as cp1252: undefined bytes dropped ("ignore") or written as "?" ("qmark")."""
    if lost == "ignore":
        return text.encode("utf-8").decode("cp1252", errors="ignore")
    return text.encode("utf-8").decode("cp1252", errors="replace").replace("\ufffd", "?")


def make_mojibake_txt(path: Path, text: str = ZH_BACKUP, lost: str = "ignore") -> Path:
    """A file that was UTF-8, read as cp1252 and saved again as UTF-8."""
    path.write_text(mojibake(text, lost), encoding="utf-8")
    return path


def make_binary_txt(path: Path) -> Path:
    """Random bytes (NULs included) under a .txt name."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(5).randbytes(4000))
    return path


def make_csv(path: Path, rows: int = 45) -> Path:
    lines = ["part,location,quantity,description"]
    for n in range(1, rows + 1):
        description = "Titanium valve for the coolant loop" if n == 23 else f"standard part {n}"
        lines.append(f"P-{n:03d},shelf {n % 20},{n * 3},{description}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


MD_TEXT = """# Cache Guide

Intro text for the cache guide.

## Configuration

Set the cache size to 512 megabytes with the --cache flag.

```bash
# not a heading: a comment in a code block
kbqa index --cache 512
```

### Eviction

Old entries are evicted after 30 days.

Tuning
------

Setext headings work too.
"""
MD_FACT = "Set the cache size to 512 megabytes with the --cache flag."
JSON_FACT = "The ingest worker retries failed jobs five times before giving up."
HTML_FACT = "Port 8443 must be open for the dashboard."
HTML_TEXT = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Network Guide</title>
<style>body { color: red }</style><script>var hidden = "do not index";</script></head>
<body><nav>Home | About</nav><p>Welcome to the <b>network</b> guide.</p>
<h1>Network Setup</h1><p>Every site uses a dedicated VLAN.</p>
<h2>Firewall</h2><p>Port <code>8443</code> must be open for the dashboard.</p>
<table><tr><th>Port</th><th>Use</th></tr><tr><td>22</td><td>SSH</td></tr></table>
<h2>DNS</h2><ul><li>Primary: 10.0.0.2</li><li>Secondary: 10.0.0.3</li></ul></body></html>
"""


def build_mixed_folder(dst: Path) -> dict[str, str]:
    """A folder with one file of every supported kind plus broken files.

    Returns filename → fact phrase the loaded text must contain, or "FAIL: <keyword>"
    (see FAIL_PREFIX) for files that must be refused with a reason containing the keyword.
    """
    import json

    dst.mkdir(parents=True, exist_ok=True)
    make_text_pdf(dst / "manual.pdf", MANUAL_PAGES, outline=True, outline_entries=MANUAL_OUTLINE)
    make_gbk_txt(dst / "gbk_manual.txt")
    make_mojibake_txt(dst / "mojibake.txt")
    make_docx(dst / "handbook.docx")
    make_scanned_pdf(dst / "scanned.pdf", SCAN_FACT, ["Page two is a normal text page about the scanner warranty."])
    (dst / "guide.md").write_text(MD_TEXT, encoding="utf-8")
    make_csv(dst / "parts.csv")
    make_pptx(dst / "slides.pptx")
    make_xlsx(dst / "budget.xlsx")
    config = {
        "service": {"name": "ingest-worker", "retry_limit": 5, "description": JSON_FACT},
        "tags": ["etl", "batch"],
    }
    (dst / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (dst / "network.html").write_text(HTML_TEXT, encoding="utf-8")
    (dst / "big5_warranty.txt").write_bytes(BIG5_TEXT.encode("big5"))
    (dst / "utf16_contacts.txt").write_bytes(UTF16_TEXT.encode("utf-16"))
    make_corrupt_pdf(dst / "corrupt.pdf")
    make_encrypted_pdf(dst / "encrypted.pdf")
    (dst / "empty.txt").write_bytes(b"")
    make_binary_txt(dst / "binary.txt")
    (dst / "unsupported.xyz").write_text("some data", encoding="utf-8")
    return {
        "manual.pdf": MANUAL_FACT,
        "gbk_manual.txt": ZH_FACT,
        "mojibake.txt": MOJIBAKE_FACT,
        "handbook.docx": DOCX_FACT,
        "scanned.pdf": SCAN_FACT,
        "guide.md": MD_FACT,
        "parts.csv": "Titanium valve for the coolant loop",
        "slides.pptx": PPTX_FACT,
        "budget.xlsx": XLSX_FACT,
        "config.json": JSON_FACT,
        "network.html": HTML_FACT,
        "big5_warranty.txt": BIG5_FACT,
        "utf16_contacts.txt": UTF16_FACT,
        "corrupt.pdf": FAIL_PREFIX + "corrupt PDF",
        "encrypted.pdf": FAIL_PREFIX + "encrypted PDF",
        "empty.txt": FAIL_PREFIX + "empty file",
        "binary.txt": FAIL_PREFIX + "binary data",
        "unsupported.xyz": FAIL_PREFIX + "unsupported file type",
    }
