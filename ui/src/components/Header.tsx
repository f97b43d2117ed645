import { useRef, type KeyboardEvent } from "react";

export const TABS = ["Queue", "Library", "Settings"] as const;
export type Tab = (typeof TABS)[number];

export const tabId = (tab: Tab) => `tab-${tab.toLowerCase()}`;
export const panelId = (tab: Tab) => `panel-${tab.toLowerCase()}`;

interface Props {
  selected: Tab;
  onSelect(tab: Tab): void;
}

/** App name and the tab list (arrow keys, Home and End move between tabs). */
export function Header({ selected, onSelect }: Props) {
  const buttons = useRef(new Map<Tab, HTMLButtonElement>());

  function onKeyDown(event: KeyboardEvent) {
    const index = TABS.indexOf(selected);
    const target = {
      ArrowRight: TABS[(index + 1) % TABS.length],
      ArrowLeft: TABS[(index - 1 + TABS.length) % TABS.length],
      Home: TABS[0],
      End: TABS[TABS.length - 1],
    }[event.key];
    if (!target) return;
    event.preventDefault();
    onSelect(target);
    buttons.current.get(target)?.focus();
  }

  return (
    <header className="header">
      <h1 className="header__title">
        <span className="header__logo" aria-hidden="true" />
        Stemroom
      </h1>
      <div className="tabs" role="tablist" aria-label="Sections" onKeyDown={onKeyDown}>
        {TABS.map((tab) => (
          <button
            key={tab}
            ref={(el) => {
              if (el) buttons.current.set(tab, el);
            }}
            type="button"
            role="tab"
            id={tabId(tab)}
            className="tabs__tab"
            aria-selected={tab === selected}
            aria-controls={panelId(tab)}
            tabIndex={tab === selected ? 0 : -1}
            onClick={() => onSelect(tab)}
          >
            {tab}
          </button>
        ))}
      </div>
    </header>
  );
}
