"""The LLM endpoint: an OpenAI-compatible chat client with retries and a budget
(`client`), and the price table that turns token usage into US dollars (`pricing`).
"""

__all__: list[str] = []
