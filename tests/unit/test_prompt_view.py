"""The token view: one box per window, chips coloured by weight, cut spans marked, long prompts capped."""
from diffusion_blocks.networks.clip_tokenizer import default_tokenizer
from diffusion_blocks.networks.prompt_syntax import tokenize_prompt
from diffusion_blocks.views.tokens import CUT, DOWN, NEUTRAL, UP, draw_tokens, weight_colour


def picture(text, **options):
    tokenizer = default_tokenizer()
    prompt = tokenize_prompt(text, tokenizer, 49407)
    return draw_tokens(prompt.windows, tokenizer.token_text, prompt.spans, prompt.problems, **options)


def colours(image):
    return {colour for _, colour in image.getcolors(maxcolors=1 << 20)}


def test_weights_get_warm_and_cool_colours():
    assert weight_colour(1.0) == NEUTRAL and weight_colour(2.0) == UP and weight_colour(0.5) == DOWN
    assert weight_colour(1.2) not in (NEUTRAL, UP)
    found = colours(picture("(warm:2) (cool:0.5) plain"))
    assert {UP, DOWN, NEUTRAL} <= found


def test_a_span_cut_between_windows_is_marked():
    assert CUT in colours(picture(" ".join(["cat"] * 100)))  # one 100-token span: cut after 75
    assert CUT not in colours(picture("a red fox"))


def test_height_follows_the_prompt_and_is_capped():
    short, long = picture("a red fox", width=640), picture("cat " * 10_000, width=640, max_height=2000)
    assert short.width == long.width == 640
    assert short.height < 200 and 1500 < long.height <= 2000
