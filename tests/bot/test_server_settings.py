"""/settings: a server's managers choose who may use the bot and who may change characters, over the host's
defaults, without touching other servers."""

from __future__ import annotations

from tests.bot.conftest import make_world, private_text
from tests.fakediscord import MANAGE_GUILD, FakeDiscord


async def test_managers_choose_the_roles_of_their_server(discord: FakeDiscord, start_bot: object) -> None:
    world, other = make_world(discord), make_world(discord, "Elsewhere")
    guild = world.guild
    listeners, bard = guild.role("Listeners"), guild.role("Bard")
    world.alice.roles.append(listeners.id)
    world.bob.roles.append(bard.id)
    gm = guild.member("gm", guild.role("Game master", MANAGE_GUILD))
    await start_bot(DIA_REQUIRED_ROLE="Druid")  # type: ignore[operator]

    async def run(member: object, command: str, /, **options: object) -> str:
        return await private_text(await discord.slash(guild, member, world.text, command, **options))  # type: ignore[arg-type]

    synced = discord.commands["settings"]
    assert int(synced["default_member_permissions"]) == MANAGE_GUILD, "Discord shows it to managers only"
    subcommands = {o["name"] for o in synced["options"]}
    assert subcommands == {"show", "role", "character-role", "voice", "read-channel", "reset"}

    # The host's role, which this server does not have: the message says who can fix it.
    assert "needs the Druid role, which this server does not have" in await run(world.alice, "say", text="Hi.")
    assert "/settings role" in await run(world.alice, "say", text="Hi.")
    shown = await run(gm, "settings show")
    assert "Who may use the bot: the role Druid (not here) (the bot's default)" in shown, shown
    assert "Who may change characters: Manage Server (the bot's default)" in shown, shown

    # Only managers change settings.
    assert "needs the Manage Server permission" in await run(world.bob, "settings role", role=bard)

    chosen = await run(gm, "settings role", role=listeners)
    assert "Who may use the bot: the **Listeners** role." in chosen, chosen
    assert "You need the Listeners role" in await run(world.bob, "say", text="Hi.")
    # Alice has the role: she gets past it, to the next question (no worker is running).
    assert "No voice worker is running" in await run(world.alice, "say", text="Hi.")

    assert "Who may use the bot: everyone." in await run(gm, "settings role")
    assert "Join a voice channel first" in await run(world.bob, "say", text="Hi.")  # bob is not in voice

    assert "Changing characters needs the Manage Server permission" in await run(
        world.bob, "character delete", name="Nobody"
    )
    chosen = await run(gm, "settings character-role", role=bard)
    assert "Who may change characters: the **Bard** role and Manage Server." in chosen, chosen
    assert "Changing characters needs the Bard role or the Manage Server permission" in await run(
        world.alice, "character delete", name="Nobody"
    )
    assert "no character" in (await run(world.bob, "character delete", name="Nobody")).lower()

    # Another server still follows the host.
    elsewhere = await discord.slash(other.guild, other.alice, other.text, "say", text="Hi.")
    assert "needs the Druid role" in await private_text(elsewhere)

    reset = await run(gm, "settings reset")
    assert "the role Druid (not here) (the bot's default)" in reset and "Manage Server (the bot's default)" in reset
    assert "needs the Druid role" in await run(world.alice, "say", text="Hi.")
