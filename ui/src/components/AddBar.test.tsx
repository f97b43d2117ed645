import { describe, expect, it } from "vitest";
import { isLink, linksIn, trimLink } from "./AddBar";

describe("the link field", () => {
  it("takes a link pasted with invisible characters at its ends, as the backend does", () => {
    // A zero-width space before, a word joiner and a soft hyphen after:
    // what a copy from a chat app or a web page can carry.
    const pasted = "\u200bhttps://www.youtube.com/watch?v=dQw4w9WgXcQ\u2060\u00ad \n";
    expect(isLink(pasted)).toBe(true);
    expect(trimLink(pasted)).toBe("https://www.youtube.com/watch?v=dQw4w9WgXcQ");
    expect(trimLink("\ufeff\u200e https://a.example/x \u200f")).toBe("https://a.example/x");
    // Copied out of right-to-left text: embeddings, isolates, the Arabic letter mark.
    expect(isLink("\u202a\u2066https://a.example/x\u2069\u202c\u061c")).toBe(true);
    expect(trimLink("\u202bhttps://a.example/x\u2067")).toBe("https://a.example/x");
  });

  it("keeps invisible characters inside a link and refuses what is not one", () => {
    expect(trimLink("https://a.example/\u200bx")).toBe("https://a.example/\u200bx");
    expect(isLink("/home/me/song.mp3")).toBe(false);
    expect(isLink("\u200b")).toBe(false);
    expect(isLink("https://")).toBe(false);
  });

  it("takes several links pasted at once, and nothing that is not a link", () => {
    // Two lines of links, as a one-line field receives them (spaces), or a list.
    expect(linksIn("https://a.example/x https://b.example/y")).toEqual(["https://a.example/x", "https://b.example/y"]);
    expect(linksIn("https://a.example/x\n\u200bhttps://b.example/y\u200b\n")).toEqual([
      "https://a.example/x",
      "https://b.example/y",
    ]);
    expect(linksIn("https://a.example/x, https://b.example/y")).toEqual(["https://a.example/x", "https://b.example/y"]);
    // A comma inside a link is the link's.
    expect(linksIn("https://a.example/x?tags=a,b")).toEqual(["https://a.example/x?tags=a,b"]);
    expect(linksIn("https://a.example/x and more")).toBeNull();
    expect(linksIn("  ")).toBeNull();
  });
});
