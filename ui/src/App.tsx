import { useEffect, useEffectEvent, useRef, useState, type ReactNode } from "react";
import { useBackend } from "./backend";
import type { AddResult, Duplicate, Job, LinkInfo, Preset, Rejected } from "./bindings";
import { errorText } from "./errors";
import { useAppInfo } from "./hooks/useAppInfo";
import { useQueue } from "./hooks/useQueue";
import { untilUnmount } from "./hooks/untilUnmount";
import { Alert } from "./components/Alert";
import { DropOverlay } from "./components/DropOverlay";
import { DuplicateNotice } from "./components/DuplicateNotice";
import { Header, TABS, panelId, tabId, type Tab } from "./components/Header";
import { LibraryView } from "./components/LibraryView";
import { PlaylistDialog } from "./components/PlaylistDialog";
import { QueueView } from "./components/QueueView";
import { RejectedNotice } from "./components/RejectedNotice";
import { SettingsView } from "./components/SettingsView";
import { RecoveryNotice } from "./components/RecoveryNotice";
import { SetupBanner } from "./components/SetupBanner";
import { Welcome, readyToSeparate } from "./components/Welcome";

export function App() {
  const backend = useBackend();
  const app = useAppInfo();
  const queue = useQueue();
  const [tab, setTab] = useState<Tab>("Queue");
  const [dragging, setDragging] = useState(false);
  const [rejected, setRejected] = useState<Rejected[]>([]);
  const [duplicates, setDuplicates] = useState<Duplicate[]>([]);
  /** Non-audio files skipped inside dropped folders (names, and how many more). */
  const [skipped, setSkipped] = useState<{ names: string[]; more: number } | null>(null);
  const [addError, setAddError] = useState<string | null>(null);
  const [playlists, setPlaylists] = useState<LinkInfo[]>([]);
  /** A song to open in the player, asked for from the queue's Finished list. */
  const [playRequest, setPlayRequest] = useState<{ song: Job; at: number } | null>(null);
  // The quality songs added now get (null: as in Settings), for this session.
  const [preset, setPreset] = useState<Preset | null>(null);
  // The notice of a job database rebuilt at this start, once dismissed.
  const [recoverySeen, setRecoverySeen] = useState(false);
  // The first-run screen: decided once, when the app first knows what is
  // installed (shown while the model or ONNX Runtime is missing, until "Start").
  const [welcome, setWelcome] = useState<boolean | null>(null);
  const firstInfo = app.info;
  useEffect(() => {
    if (firstInfo && welcome === null) setWelcome(!readyToSeparate(firstInfo));
  }, [firstInfo, welcome]);

  /**
   * Shows what an add refused, found already there, skipped, or left to
   * choose: in place of the last add's notices, or beside them (`merge`)
   * when the adds overlapped (a drop while a link was being checked).
   */
  function show({ rejected, playlists, duplicates, skipped, skippedMore }: AddResult, merge = false) {
    if (merge) {
      setRejected((current) => [...current, ...rejected]);
      setDuplicates((current) => [...current, ...duplicates.filter((d) => !current.some((c) => c.path === d.path))]);
      if (skipped.length > 0 || skippedMore > 0) {
        setSkipped((current) => ({
          names: [...(current?.names ?? []), ...skipped],
          more: (current?.more ?? 0) + skippedMore,
        }));
      }
    } else {
      setRejected(rejected);
      setDuplicates(duplicates);
      setSkipped(skipped.length > 0 ? { names: skipped, more: skippedMore } : null);
      setAddError(null);
    }
    if (playlists.length > 0) setPlaylists((current) => [...current, ...playlists]);
  }

  // Adds under way, and the batch of overlapping ones: the first answer of
  // a batch replaces the notices shown, the others join it.
  const addsPending = useRef(0);
  const addBatch = useRef({ answered: false });

  /**
   * Runs an add request and reports what it refused; resolves to whether
   * anything was added. `quietWhenEmpty`: an answer with nothing in it (the
   * file dialog closed without a choice) leaves the notices shown before.
   */
  async function add(request: () => Promise<AddResult>, { quietWhenEmpty = false } = {}): Promise<boolean> {
    if (addsPending.current === 0) addBatch.current = { answered: false };
    const batch = addBatch.current;
    addsPending.current += 1;
    try {
      const result = await request();
      const empty =
        result.added.length + result.rejected.length + result.duplicates.length + result.skipped.length === 0 &&
        result.playlists.length === 0 &&
        result.skippedMore === 0;
      if (!(quietWhenEmpty && empty)) {
        show(result, batch.answered);
        batch.answered = true;
      }
      if (result.added.length > 0) await queue.refresh();
      // A playlist is handed on to its dialog: its link is done with too
      // (left in the field, an Enter looked the playlist up again).
      return result.added.length > 0 || result.playlists.length > 0;
    } catch (e) {
      setAddError(errorText(e));
      batch.answered = true;
      return false;
    } finally {
      addsPending.current -= 1;
    }
  }

  // Songs added from outside (a drop, "Open with") are shown in the Queue,
  // unless a modal dialog waits for an answer: its tab hidden, it stayed
  // open, modal, out of sight (the songs are added all the same; the Queue
  // shows them when the person goes there). An inline question (the
  // export panel's "Already exported") is no reason to stay.
  function toQueue() {
    if (document.querySelector('[aria-modal="true"]')) return;
    setTab("Queue");
  }

  // Files opened with Stemroom (from a file manager) are added by the
  // backend; what it refused or found already there shows as for a drop.
  const { opened } = queue;
  const showOpened = useEffectEvent((result: AddResult) => {
    toQueue();
    show(result);
  });
  useEffect(() => {
    if (opened) showOpened(opened);
  }, [opened]);

  // Dropped on the welcome screen (the model or ONNX Runtime not there
  // yet): every song would fail at once, out of sight. Said instead.
  const [earlyDrop, setEarlyDrop] = useState(false);
  const onDrop = useEffectEvent((paths: string[]) => {
    setDragging(false);
    if (welcome && app.info) {
      setEarlyDrop(true);
      return;
    }
    setEarlyDrop(false);
    // A link dragged from a browser arrives through the webview's file
    // drop with its %-escapes decoded (WebKitGTK's drop hands URIs over as
    // paths), so it may not be the link any more: it is pasted instead.
    // The app's own images (`thumb:`) are not files either.
    const isUri = (p: string) => /^[a-z][a-z0-9+.-]*:\/\//i.test(p);
    const links = paths.filter((p) => isUri(p) && !/^(thumb|file):/i.test(p));
    const files = paths.filter((p) => !isUri(p) || /^file:/i.test(p));
    if (links.length === 0 && files.length === 0) return;
    toQueue();
    const refused = links.map((path) => ({
      path,
      reason: "A dropped link may arrive changed: copy it and paste it in the Link field.",
    }));
    if (files.length === 0) {
      const result = { added: [], rejected: refused, duplicates: [], skipped: [], skippedMore: 0, playlists: [] };
      void add(() => Promise.resolve(result));
      return;
    }
    void add(async () => {
      const result = await backend.addPaths(files, false, preset);
      return { ...result, rejected: [...refused, ...result.rejected] };
    });
  });
  // Without it a drop would do nothing at all: said, with the way around it.
  const [dropError, setDropError] = useState<string | null>(null);
  useEffect(
    () => untilUnmount(backend.onFileDrop((paths) => onDrop(paths)), (e) => setDropError(errorText(e))),
    [backend],
  );
  useEffect(() => untilUnmount(backend.onDragHover(setDragging)), [backend]);

  function openInPlayer(song: Job) {
    setPlayRequest({ song, at: Date.now() });
    setTab("Library");
  }

  // "Separate again" pressed and not answered yet: a second press (a
  // double click) must not queue the song twice.
  const addingAgain = useRef(new Set<string>());
  const [pendingAgain, setPendingAgain] = useState<ReadonlySet<string>>(new Set());
  async function addAgain(path: string) {
    if (addingAgain.current.has(path)) return;
    addingAgain.current.add(path);
    setPendingAgain(new Set(addingAgain.current));
    try {
      const result = await backend.addPaths([path], true, preset);
      setDuplicates((current) => current.filter((d) => d.path !== path));
      // The file may have gone, or changed, since: say why it was not
      // added (beside what was said before).
      if (result.rejected.length > 0) setRejected((current) => [...current, ...result.rejected]);
      if (result.added.length > 0) await queue.refresh();
    } catch (e) {
      setAddError(errorText(e));
    } finally {
      addingAgain.current.delete(path);
      setPendingAgain(new Set(addingAgain.current));
    }
  }

  // Each tab opens at its top (the page scrolls as a whole; a tab left
  // scrolled down must not hide the next one's first controls under the header).
  useEffect(() => {
    window.scrollTo({ top: 0 });
  }, [tab]);

  const { libraryVersion } = queue;
  const refreshInfo = app.refresh;
  useEffect(() => {
    // A finished job may have started the runtime (provider in use).
    if (libraryVersion > 0) void refreshInfo();
  }, [libraryVersion, refreshInfo]);

  const panels: Record<Tab, ReactNode> = {
    Queue: (
      <QueueView
        queue={queue}
        onPickFiles={() => add(() => backend.pickFiles(preset), { quietWhenEmpty: true })}
        onAddLinks={(urls) => add(() => backend.addPaths(urls, false, preset))}
        preset={preset}
        onPresetChange={setPreset}
        onOpenSong={openInPlayer}
      />
    ),
    Library: (
      <LibraryView
        version={libraryVersion}
        changes={queue.queueVersion}
        playRequest={playRequest}
        jobs={queue.jobs}
      />
    ),
    Settings: <SettingsView app={app} />,
  };

  const recoveryNotice = app.info?.databaseRecovery && !recoverySeen && (
    <RecoveryNotice recovery={app.info.databaseRecovery} onDismiss={() => setRecoverySeen(true)} />
  );

  if (welcome && app.info) {
    const waiting = (queue.jobs ?? []).filter((j) => j.state.state === "queued").length;
    return (
      <div className="app">
        <main className="main">
          {recoveryNotice}
          {earlyDrop && (
            <Alert title="The songs were not added" onDismiss={() => setEarlyDrop(false)}>
              Finish the setup below first (the songs need the model to separate), then drop them again.
            </Alert>
          )}
          {waiting > 0 && (
            // Opened with Stemroom from a file manager: the backend holds
            // them until the setup is done.
            <div className="alert" role="status" data-testid="welcome-waiting">
              <p className="alert__body">
                {waiting === 1 ? "1 song waits" : `${waiting} songs wait`} in the queue:{" "}
                {waiting === 1 ? "it starts" : "they start"} once the setup below is done.
              </p>
            </div>
          )}
          <Welcome
            info={app.info}
            downloads={app.downloads}
            onChanged={() => void app.refresh()}
            onStart={() => setWelcome(false)}
          />
        </main>
      </div>
    );
  }

  return (
    <div className="app">
      <Header selected={tab} onSelect={setTab} />
      <main className="main">
        {app.info && <SetupBanner info={app.info} downloads={app.downloads} onChanged={() => void app.refresh()} />}
        {app.error && <Alert title="Stemroom could not start properly">{app.error}</Alert>}
        {recoveryNotice}
        {rejected.length > 0 && <RejectedNotice rejected={rejected} onDismiss={() => setRejected([])} />}
        {duplicates.length > 0 && (
          <DuplicateNotice
            duplicates={duplicates}
            adding={pendingAgain}
            onOpen={(song) => {
              setDuplicates([]);
              openInPlayer(song);
            }}
            onAddAgain={(path) => void addAgain(path)}
            onDismiss={() => setDuplicates([])}
          />
        )}
        {skipped && (
          <Alert
            title={`Skipped ${skipped.names.length + skipped.more} ${skipped.names.length + skipped.more === 1 ? "file" : "files"} that ${skipped.names.length + skipped.more === 1 ? "is" : "are"} not audio`}
            onDismiss={() => setSkipped(null)}
          >
            <p className="skipped">
              {skipped.names.map((name, i) => (
                <span key={i}>
                  {i > 0 && ", "}
                  <bdi>{name}</bdi>
                </span>
              ))}
              {skipped.more > 0 && ` and ${skipped.more} more`}
            </p>
          </Alert>
        )}
        {dropError && (
          <Alert title="Files dropped on the window cannot be added" onDismiss={() => setDropError(null)}>
            {dropError} Add them with “Add files…” in the Queue tab instead.
          </Alert>
        )}
        {addError && (
          <Alert title="The songs were not added" onDismiss={() => setAddError(null)}>
            {addError}
          </Alert>
        )}
        {TABS.map((t) => (
          <section
            key={t}
            id={panelId(t)}
            role="tabpanel"
            aria-labelledby={tabId(t)}
            hidden={t !== tab}
            className="panel"
          >
            {panels[t]}
          </section>
        ))}
      </main>
      {dragging && <DropOverlay />}
      {playlists[0] && (
        <PlaylistDialog
          key={playlists[0].url}
          playlist={playlists[0]}
          onClose={() => setPlaylists((p) => p.slice(1))}
          onAdd={(entries) => {
            setPlaylists((p) => p.slice(1));
            void add(() => backend.addLinks(entries, preset));
          }}
        />
      )}
    </div>
  );
}
