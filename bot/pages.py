"""Long lists (the cast, the pronunciations) as pages of a private embed, turned with ◀ and ▶.

An embed's description holds 4096 characters, so a server's 200 characters or pronunciations need several; rows
are never split between pages. The buttons work while the bot runs, up to `TIMEOUT` (within the 15 minutes an
interaction's token may edit its answer), and are then taken away. In the manner of RoboDanny's paginator and
discord.py's examples/views/counter.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import discord

PAGE_CHARS = 3800  # of the description's 4096, leaving room for the markdown escapes rows carry
TIMEOUT = 600.0


def paginate(rows: Sequence[str], limit: int = PAGE_CHARS) -> list[str]:
    """`rows` packed in order into pages of at most `limit` characters, one per line; a row longer than a page
    is cut with an ellipsis."""
    pages: list[list[str]] = [[]]
    size = 0
    for row in rows:
        row = row if len(row) <= limit else row[: limit - 1] + "…"
        if pages[-1] and size + 1 + len(row) > limit:
            pages.append([])
            size = 0
        size += len(row) + (1 if pages[-1] else 0)
        pages[-1].append(row)
    return ["\n".join(page) for page in pages]


class Pages(discord.ui.View):
    """One embed whose description is `pages[index]`, the footer saying where the reader is."""

    def __init__(self, title: str, pages: list[str]) -> None:
        super().__init__(timeout=TIMEOUT)
        self.title, self.pages, self.index = title, pages, 0
        self.answered: discord.Interaction | None = None  # whose answer to clear of buttons at the timeout
        self._update()

    def embed(self) -> discord.Embed:
        embed = discord.Embed(title=self.title, description=self.pages[self.index])
        if len(self.pages) > 1:
            embed.set_footer(text=f"Page {self.index + 1} of {len(self.pages)}")
        return embed

    def _update(self) -> None:
        self.previous.disabled = self.index == 0
        self.next.disabled = self.index == len(self.pages) - 1

    async def _turn(self, interaction: discord.Interaction, step: int) -> None:
        self.index = min(max(self.index + step, 0), len(self.pages) - 1)
        self._update()
        await interaction.response.edit_message(embed=self.embed(), view=self)

    @discord.ui.button(label="◀", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction, button: discord.ui.Button[Pages]) -> None:
        await self._turn(interaction, -1)

    @discord.ui.button(label="▶", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button[Pages]) -> None:
        await self._turn(interaction, +1)

    async def on_timeout(self) -> None:
        # Dismissed, or its token expired: the buttons then fail harmlessly anyway.
        if self.answered is not None:
            with contextlib.suppress(discord.HTTPException):
                await self.answered.edit_original_response(view=None)


async def send_pages(interaction: discord.Interaction, title: str, rows: Sequence[str]) -> None:
    """Answer `interaction` privately with `rows` under `title`: one embed, with page buttons when needed."""
    pages = paginate(rows)
    if len(pages) == 1:
        await interaction.response.send_message(embed=discord.Embed(title=title, description=pages[0]), ephemeral=True)
        return
    view = Pages(title, pages)
    await interaction.response.send_message(embed=view.embed(), view=view, ephemeral=True)
    view.answered = interaction
