/**
 * Whether keyboard focus has nowhere useful to be: on the page's body, on
 * nothing, on an element gone from the page, or on a control that was
 * disabled under it (WebKit and Chromium leave focus on a button that
 * disables itself, where no key reaches it). A control that changes what
 * is on screen hands focus on when this holds, and only then.
 */
export function focusLost(): boolean {
  const el = document.activeElement;
  if (!el || el === document.body || !el.isConnected) return true;
  return (el as HTMLButtonElement).disabled === true;
}
