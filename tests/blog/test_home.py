"""The blog's home page shows the site's title and tagline from the key-value store."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from blog.app import create_app
from shared.services.key_values import SqlKeyValueService
from tests.conftest import ClientMaker


async def test_home_shows_defaults_before_anything_is_set(make_client: ClientMaker) -> None:
    page = await (await (await make_client(create_app)).get("/")).get_data(as_text=True)
    assert "<h1>Rose Ash</h1>" in page
    assert "News, stories and pages from the co-op." in page


async def test_home_shows_the_configured_title_escaped(
    make_client: ClientMaker, session: AsyncSession
) -> None:
    values = SqlKeyValueService(session)
    await values.do_set_value("site.title", "Fish & <Chips> Co-op")
    await values.do_set_value("site.tagline", "Fresh every Friday.")
    await session.commit()
    page = await (await (await make_client(create_app)).get("/")).get_data(as_text=True)
    assert "<h1>Fish &amp; &lt;Chips&gt; Co-op</h1>" in page
    assert "Fresh every Friday." in page
