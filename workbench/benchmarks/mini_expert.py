"""Scripted expert turns for the synthetic worlds, used to make SFT traces and demo traces.

The expert knows each item's ground truth (degradation labels, crop box,
the company behind an emblem), so it writes the turns a good agent would:
`<problem>` with the right labels, code that undoes each degradation (in
reverse order of application), sensible search queries, and the answer.
Its turns are replayed through the real runner, so tool results in the
resulting traces (sandbox output images, search results) are real.
"""

from workbench.benchmarks.mat_search_mini import Company, emblem_query

REPAIRS = {
    "rotation90": "img = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)",
    "rotation180": "img = cv2.rotate(img, cv2.ROTATE_180)",
    "dark": "img = cv2.convertScaleAbs(img, alpha=4.5, beta=0)",
    "overexposure": "img = np.clip((img.astype(np.float32) - 175) / 0.3, 0, 255).astype(np.uint8)",
    "blur": "img = cv2.addWeighted(img, 2.5, cv2.GaussianBlur(img, (0, 0), 4), -1.5, 0)",
    "noise": "img = cv2.medianBlur(img, 5)",
}
THINK_PROBLEM = {
    "rotation90": "the image is turned on its side", "rotation180": "the image is upside down",
    "dark": "the image is very dark", "overexposure": "the image is washed out",
    "blur": "the image is blurry", "noise": "the image is grainy", "crop": "the region is too small to read",
}


def repair_code(labels: list[str], box: list[int] | None = None) -> str:
    """Python that undoes the given degradations (applied in `labels` order) or crops `box`."""
    lines = ["import cv2", 'img = cv2.imread("path_to_input_image.jpg")']
    if "overexposure" in labels:
        lines.insert(1, "import numpy as np")
    if "crop" in labels:
        if box is None:
            raise ValueError("a crop repair needs the question's box")
        # enlarged, so the small region fills the model's view instead of a few image tokens
        lines += [f"x0, y0, x1, y1 = denormalize_box({list(box)})", "img = cv2.resize(img[y0:y1, x0:x1], (224, 224))"]
    for label in reversed(labels):
        if label in REPAIRS:
            lines.append(REPAIRS[label])
    lines.append('cv2.imwrite("path_to_output_image.jpg", img)')
    return "\n".join(lines) + "\n"


def answer_turn(think: str, answer: str) -> str:
    """A final turn. The answer is spaced as the system prompt shows it, so a name copied out of a result
    (" Kasapol", after a space there) is the same tokens in the answer."""
    return f"<think>{think}</think><answer> {answer} </answer>"


def problem_text(labels: list[str]) -> str:
    return "{" + ", ".join(f"'{label}'" for label in labels) + "}"


def coding_turns(labels: list[str], answer: str, box: list[int] | None = None) -> list[str]:
    """Expert turns for a MAT-Coding(-mini) item: problem, code (unless none), answer."""
    if labels == ["none"]:
        return ["<think>The image is clear.</think><problem>{'none'}</problem>",
                answer_turn("I can read it directly.", answer)]
    reasons = " and ".join(THINK_PROBLEM[label] for label in labels)
    return [
        f"<think>Before answering: {reasons}.</think><problem>{problem_text(labels)}</problem>",
        f"<think>I will fix it with code.</think><code>```python\n{repair_code(labels, box)}```</code>",
        answer_turn("Now the image is clear.", answer),
    ]


def direct_turns(answer: str) -> list[str]:
    """The expert's one turn when no tools are offered: answer from the image as it is."""
    return [answer_turn("I answer from the image as it is.", answer)]


def search_turns(company: Company, kind: str, answer: str) -> list[str]:
    """Expert turns for a MAT-Search-mini item: one or two searches, then the answer."""
    first = (f"<think>The image shows a {company.emblem}. I should find the company with that emblem."
             f"</think><search>{emblem_query(company)}</search>")
    if kind in ("city", "founded"):
        return [first, answer_turn(f"The result names {company.name}.", answer)]
    # names after a space, as in the results they are copied from
    second_query = f"country of {company.city}" if kind == "country" else f"founder of {company.name}"
    return [first,
            f"<think>The company is {company.name}. I need one more fact.</think><search>{second_query}</search>",
            answer_turn("Found it.", answer)]
