"""The general-knowledge check: questions asked the way the fine-tune was trained, scored by word."""

from tuneforge.data.prompt import DEMARCATION_KEY, DOLLY_TEMPLATE, PromptFormat
from tuneforge.llm import knowledge


def test_instruction_fine_tunes_are_asked_through_their_template():
    fmt = PromptFormat(kind="instruction", prompt_template=DOLLY_TEMPLATE["prompt"], demarcation=DEMARCATION_KEY)
    prompts = knowledge.prompts(None, fmt, "instruction")
    assert len(prompts) == len(knowledge.QUESTIONS)
    assert prompts[0].endswith("### Instruction:\nWhat is the capital of France?\n\n### Input:\n" + DEMARCATION_KEY)


def test_domain_text_has_no_question_to_ask():
    assert knowledge.prompts(None, PromptFormat(kind="domain", prompt_template=""), "domain") is None


def test_an_answer_counts_when_an_accepted_word_appears():
    answers = ["The capital of France is Paris."] + ["I do not know."] * (len(knowledge.QUESTIONS) - 2) + ["Bees make honey!"]
    result = knowledge.score(answers)
    assert (result["right"], result["asked"]) == (2, 12) and result["score"] == round(2 / 12, 4)
    assert not knowledge.correct("france", ("paris",)) and not knowledge.correct("15 days", ("5", "five"))
