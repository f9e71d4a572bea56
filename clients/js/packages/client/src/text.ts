// Showing a notification safely: its title and body are plain text (docs/protocol.md), so they are
// put into the page as text nodes, never parsed as HTML. Its `actionUrl` is checked again here
// (the gateway already refuses anything but a relative path or https), so a link can never run
// script whatever the server sent.

/** `url` if it is safe as a link target (a same-site path or an https URL), else `undefined`. */
export function safeHref(url: string | undefined): string | undefined {
  // Browsers drop tabs and line breaks inside URLs (`/\t/evil.example` is `//evil.example`): any
  // control character makes the link unsafe.
  if (!url || /[\u0000-\u001f\u007f]/.test(url)) return undefined;
  if (url.startsWith("/") && !url.startsWith("//") && !url.includes("\\")) return url;
  try {
    return new URL(url).protocol === "https:" ? url : undefined;
  } catch {
    return undefined;
  }
}

/** Sets an element's content to `text`, as text (a `<script>` in a title stays those characters). */
export function setText(element: { textContent: string | null }, text: string): void {
  element.textContent = text;
}
