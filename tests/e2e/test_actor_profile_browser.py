"""An app's fediverse profile, as a person who clicks an actor link sees it in Chromium.

Servers link to an actor's id; a browser opening it gets the HTML profile (the same URL gives
ActivityPub JSON to servers). The page must render with the app's layout, show the handle to
search for on another server, the icon, the counts, and links that work, without a console
error (the pages' Content-Security-Policy included).
"""

from __future__ import annotations

import asyncio

from playwright.async_api import ConsoleMessage, async_playwright, expect

from tests.e2e.conftest import Platform, launch_options

TEST_TIMEOUT = 90.0  # seconds, browser start and stop included
STEP_TIMEOUT_MS = 15_000


async def test_an_apps_actor_profile_in_a_browser(chromium_path: str, platform: Platform) -> None:
    blog = platform.urls["blog"]
    host = blog.split("//", 1)[1]
    async with asyncio.timeout(TEST_TIMEOUT), async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options(chromium_path))
        try:
            page = await browser.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            problems: list[str] = []

            def record(message: ConsoleMessage) -> None:
                if message.type == "error":
                    problems.append(message.text)

            page.on("console", record)
            page.on("pageerror", lambda error: problems.append(str(error)))

            response = await page.goto(f"{blog}/ap/actors/blog")
            assert response is not None
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/html")
            await expect(page).to_have_title(f"Rose Ash Blog (@blog@{host}) · Rose Ash")
            profile = page.locator(".ap-profile")
            await expect(profile.locator("h1")).to_have_text("Rose Ash Blog")
            await expect(profile.locator(".handle")).to_have_text(f"@blog@{host}")
            await expect(profile.locator("strong")).to_have_text(f"@blog@{host}")
            icon = profile.locator("h1 img")
            await expect(icon).to_have_js_property("complete", True)
            assert await icon.evaluate("image => image.naturalWidth") > 0  # the PNG loaded
            counts = await profile.locator(".cards li").all_inner_texts()
            assert [" ".join(text.split()) for text in counts] == [
                "0 followers",
                "0 following",
                "0 posts",
            ]
            outbox = profile.get_by_role("link", name="Outbox (ActivityPub)")
            await expect(outbox).to_have_attribute("href", f"{blog}/ap/actors/blog/outbox")
            # The shared layout is there (site header), and the home link leads home.
            await expect(page.locator("header").first).to_be_visible()
            await profile.get_by_role("link", name="Blog home").click()
            await page.wait_for_url(f"{blog}/")
            assert problems == []
        finally:
            await browser.close()
