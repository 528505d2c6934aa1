// The daemon's REST contract: TypeBox schemas that the daemon validates
// requests with and publishes in /openapi.json, and whose static types the SDK
// and CLI use. Nothing here may import daemon or client code.
import { Type, type Static } from '@sinclair/typebox';

export const API_VERSION = 'v1';

/** The template a sandbox boots from when its create names none (`capsuled prepare` builds it). */
export const DEFAULT_TEMPLATE = 'base';

/** Limits that both the daemon's validation and the clients' help text quote. */
export const limits = {
  minMemoryMiB: 128,
  maxMemoryMiB: 65536,
  minVcpus: 1,
  maxVcpus: 64,
  maxCommandArgs: 4096,
  maxEnvVars: 1024,
  maxMetadataEntries: 64,
  maxNameLength: 63,
  /** Output kept per stream by the non-streaming exec; the rest is cut. */
  execOutputLimitBytes: 16 * 1024 * 1024,
  /** The most sandboxes one fork request starts. */
  maxForks: 16,
  /** A sandbox's timeout when its create names none. */
  defaultTimeoutMs: 5 * 60 * 1000,
  /** The longest timeout a sandbox may have (30 days); 0 (none) is allowed too. */
  maxTimeoutMs: 30 * 24 * 60 * 60 * 1000,
  /** CIDRs in one egress allow or deny list. */
  maxEgressRules: 64,
  /** Host ports one sandbox may publish. */
  maxPublishedPorts: 16,
  /** The largest root disk a stopped sandbox may be grown to (1 TiB). */
  maxDiskMiB: 1024 * 1024,
  /** A volume's size: at least enough for ext4's journal, at most what a sparse file may claim. */
  minVolumeMiB: 64,
  maxVolumeMiB: 4 * 1024 * 1024,
  /** The size of a volume a sandbox create makes because it does not exist yet (sparse: it takes little disk until written). */
  defaultVolumeMiB: 10 * 1024,
  /** Volumes one sandbox may attach; each mount path travels on the guest's kernel command line, which is short. */
  maxVolumesPerSandbox: 8,
  maxMountPathLength: 128,
} as const;

/** An IPv4 network, `a.b.c.d/n` (a bare address means /32); checked again by the daemon. */
const Cidr = Type.String({ pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}(/[0-9]{1,2})?$', maxLength: 18 });

/**
 * Where a sandbox's guest may send traffic. `internet: false` cuts the
 * guest's link (no traffic at all, DNS included). The lists need TAP mode and
 * work as E2B's `allowOut`/`denyOut`: a destination in `allow` is reached, else
 * one in `deny` is not, else it is (`deny: ["0.0.0.0/0"]` with an `allow`
 * list lets only those through).
 */
export const EgressRules = Type.Object(
  {
    allow: Type.Optional(Type.Array(Cidr, { maxItems: limits.maxEgressRules })),
    deny: Type.Optional(Type.Array(Cidr, { maxItems: limits.maxEgressRules })),
  },
  { additionalProperties: false },
);
export type EgressRules = Static<typeof EgressRules>;

/** A sandbox's network as the daemon reports it: the guest side is the same in every sandbox. */
export const SandboxNetwork = Type.Object({
  mode: Type.Union([Type.Literal('user'), Type.Literal('tap')]),
  internet: Type.Boolean(),
  allow: Type.Array(Type.String()),
  deny: Type.Array(Type.String()),
  guestAddress: Type.String(),
  gateway: Type.String(),
  dns: Type.String(),
  /** TAP mode: the host's end of the link to the sandbox's network namespace. */
  hostAddress: Type.Optional(Type.String()),
});
export type SandboxNetwork = Static<typeof SandboxNetwork>;

export const SetNetworkRequest = Type.Object(
  {
    internet: Type.Optional(Type.Boolean()),
    /** Replaces both lists (an absent list is emptied). */
    egress: Type.Optional(EgressRules),
  },
  { additionalProperties: false },
);
export type SetNetworkRequest = Static<typeof SetNetworkRequest>;

export const SandboxState = Type.Union([
  Type.Literal('starting'),
  Type.Literal('running'),
  Type.Literal('paused'),
  Type.Literal('stopped'),
  Type.Literal('error'),
  Type.Literal('killed'),
]);
export type SandboxState = Static<typeof SandboxState>;

const StringMap = (maxProperties: number) =>
  Type.Record(Type.String({ minLength: 1, maxLength: 256 }), Type.String({ maxLength: 32768 }), { maxProperties });

export const StateTransition = Type.Object({
  state: SandboxState,
  reason: Type.String({ description: 'user, crash, oom (its VM outgrew its memory limit), timeout, host_restart, start_failed, ...' }),
  message: Type.Optional(Type.String()),
  at: Type.String({ format: 'date-time' }),
});
export type StateTransition = Static<typeof StateTransition>;

/** What the daemon does with a sandbox whose timeout passed: remove it, pause it (memory saved), or stop it (disk kept). */
export const TimeoutAction = Type.Union([Type.Literal('kill'), Type.Literal('pause'), Type.Literal('stop')]);
export type TimeoutAction = Static<typeof TimeoutAction>;

/** The state a sandbox is kept in: what a daemon restart or a host reboot brings it back to. */
export const DesiredState = Type.Union([Type.Literal('running'), Type.Literal('paused'), Type.Literal('stopped')]);
export type DesiredState = Static<typeof DesiredState>;

/** A sandbox port published on the host: connections to hostIp:hostPort reach guestPort inside. */
export const PublishedPort = Type.Object({
  /** The host address listened on; default 127.0.0.1 (0.0.0.0 for every interface). */
  hostIp: Type.String({ minLength: 1, maxLength: 64 }),
  hostPort: Type.Integer({ minimum: 1, maximum: 65535 }),
  guestPort: Type.Integer({ minimum: 1, maximum: 65535 }),
});
export type PublishedPort = Static<typeof PublishedPort>;

/** A port to publish at create; `hostPort` 0 or absent lets the host pick a free one. */
export const PortRequest = Type.Object(
  {
    hostIp: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    hostPort: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
    guestPort: Type.Integer({ minimum: 1, maximum: 65535 }),
  },
  { additionalProperties: false },
);
export type PortRequest = Static<typeof PortRequest>;

/** Header that carries a sandbox's traffic access token to its ports (e2b's name for it). */
export const TRAFFIC_TOKEN_HEADER = 'e2b-traffic-access-token';
/** The Upgrade token that turns GET /v1/sandboxes/{id}/tunnel/{port} into a raw TCP connection to that port. */
export const PORT_TUNNEL_UPGRADE = 'capsule-tunnel';
/** Header the daemon sets on its own error answers from a port proxy, so they read apart from the service's. */
export const PORT_ERROR_HEADER = 'x-capsule-error';

// ---- Volumes ----

/** A volume's name: a DNS label (lower-case letters, digits and `-`), so it reads the same in a file name, a URL and a `-v` option. */
export const VOLUME_NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';

/** `10G`, `512M`, `1.5GiB`, `1T` (a bare number is MiB); the daemon keeps whole MiB. */
export const VolumeSize = Type.String({ minLength: 1, maxLength: 32, description: '`10G`, `512M`, `1.5GiB` (a bare number is MiB)' });

/** A volume attached at create: mounted at `mount` inside the guest, read-only when asked. */
export const VolumeMountRequest = Type.Object(
  {
    name: Type.String({ pattern: VOLUME_NAME_PATTERN }),
    /** An absolute path inside the guest; not `/` nor under /proc, /sys, /dev, /run, /tmp or /opt/capsule. */
    mount: Type.String({ minLength: 2, maxLength: limits.maxMountPathLength, pattern: '^/' }),
    readOnly: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type VolumeMountRequest = Static<typeof VolumeMountRequest>;

/** A sandbox that holds a volume: running, paused or stopped (a killed one lets go). */
export const VolumeAttachment = Type.Object({
  sandboxId: Type.String(),
  sandboxName: Type.Union([Type.String(), Type.Null()]),
  mount: Type.String(),
  readOnly: Type.Boolean(),
});
export type VolumeAttachment = Static<typeof VolumeAttachment>;

export const Volume = Type.Object({
  name: Type.String(),
  sizeBytes: Type.Integer({ description: 'the size the guest sees' }),
  diskBytes: Type.Integer({ description: 'host disk the volume takes now (its file is sparse)' }),
  createdAt: Type.String({ format: 'date-time' }),
  attachments: Type.Array(VolumeAttachment),
});
export type Volume = Static<typeof Volume>;

export const VolumeList = Type.Object({ volumes: Type.Array(Volume) });
export type VolumeList = Static<typeof VolumeList>;

export const CreateVolumeRequest = Type.Object(
  {
    name: Type.String({ pattern: VOLUME_NAME_PATTERN }),
    /** Default 10G. */
    size: Type.Optional(VolumeSize),
  },
  { additionalProperties: false },
);
export type CreateVolumeRequest = Static<typeof CreateVolumeRequest>;

/** A copy of a volume as it was when taken; restored as a new volume. */
export const VolumeSnapshot = Type.Object({
  volume: Type.String(),
  name: Type.String(),
  sizeBytes: Type.Integer(),
  diskBytes: Type.Integer({ description: 'host disk the copy takes (sparse)' }),
  createdAt: Type.String({ format: 'date-time' }),
});
export type VolumeSnapshot = Static<typeof VolumeSnapshot>;

export const VolumeSnapshotList = Type.Object({ snapshots: Type.Array(VolumeSnapshot) });
export type VolumeSnapshotList = Static<typeof VolumeSnapshotList>;

export const CreateVolumeSnapshotRequest = Type.Object(
  {
    /** Default: the time, `YYYYMMDD-HHMMSS`. */
    name: Type.Optional(Type.String({ pattern: VOLUME_NAME_PATTERN })),
  },
  { additionalProperties: false },
);
export type CreateVolumeSnapshotRequest = Static<typeof CreateVolumeSnapshotRequest>;

/** Makes the new volume `volume` from a snapshot; the snapshot's volume is left as it is. */
export const RestoreVolumeSnapshotRequest = Type.Object(
  { volume: Type.String({ pattern: VOLUME_NAME_PATTERN }) },
  { additionalProperties: false },
);
export type RestoreVolumeSnapshotRequest = Static<typeof RestoreVolumeSnapshotRequest>;

/** Grows a volume that no sandbox holds; its filesystem grows with it. */
export const ResizeVolumeRequest = Type.Object({ size: VolumeSize }, { additionalProperties: false });
export type ResizeVolumeRequest = Static<typeof ResizeVolumeRequest>;

const MIB_PER_SIZE_UNIT: Record<string, number> = { k: 1 / 1024, m: 1, g: 1024, t: 1024 * 1024 };

/**
 * `10G`, `512M`, `1.5GiB`, `1T` (units are powers of 1024; a bare number is
 * MiB) → whole MiB, or undefined when `text` is no size or no whole MiB.
 * The daemon and the CLI both read volume sizes with it.
 */
export function parseSizeMiB(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?)?\s*$/i.exec(text);
  if (!match) return undefined;
  const mib = Number(match[1]) * (MIB_PER_SIZE_UNIT[(match[2] ?? 'm').toLowerCase()] ?? 1);
  return Number.isSafeInteger(mib) ? mib : undefined;
}

export const Sandbox = Type.Object({
  id: Type.String({ description: '"sb_" followed by random base32' }),
  name: Type.Union([Type.String(), Type.Null()]),
  template: Type.String(),
  state: SandboxState,
  stateReason: Type.String(),
  stateMessage: Type.Optional(Type.String()),
  vcpus: Type.Integer(),
  memoryMiB: Type.Integer(),
  accel: Type.Union([Type.Literal('kvm'), Type.Literal('tcg')]),
  metadata: StringMap(limits.maxMetadataEntries),
  createdAt: Type.String({ format: 'date-time' }),
  /** Milliseconds from the create request to the agent answering. */
  bootMs: Type.Optional(Type.Integer()),
  /** Host process id of the VM, while it runs. */
  pid: Type.Optional(Type.Integer()),
  /** The sandbox's lifetime from its last (re)start or timeout change; 0 means none. */
  timeoutMs: Type.Integer(),
  onTimeout: TimeoutAction,
  desiredState: DesiredState,
  /** When the sandbox is killed unless its timeout is changed or kept alive first. */
  expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
  /** Host memory of the VM while it runs (in GET of one sandbox): private to it, and shared with others (its template's pages). */
  memoryUse: Type.Optional(Type.Object({ rssMiB: Type.Integer(), privateMiB: Type.Integer(), sharedMiB: Type.Integer() })),
  network: SandboxNetwork,
  /** Host ports published at create (bound while the sandbox runs). */
  ports: Type.Array(PublishedPort),
  /** Ports are reached by host name as `<port>-<id>.<domain>` (e2b's getHost). */
  domain: Type.String(),
  /** Sent as `e2b-traffic-access-token` to reach the sandbox's ports over TCP without an API key. */
  trafficAccessToken: Type.String(),
  sshHostKeys: Type.Optional(
    Type.Array(Type.String(), {
      description: "its SSH server's public host keys (`ssh-ed25519 BASE64`), known once the server has been started (POST .../ssh)",
    }),
  ),
  history: Type.Optional(Type.Array(StateTransition)),
});
export type Sandbox = Static<typeof Sandbox>;

export const CreateSandboxRequest = Type.Object(
  {
    template: Type.Optional(Type.String({ minLength: 1, maxLength: 128, default: DEFAULT_TEMPLATE })),
    name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]*$', minLength: 1, maxLength: limits.maxNameLength })),
    vcpus: Type.Optional(Type.Integer()),
    memoryMiB: Type.Optional(Type.Integer()),
    env: Type.Optional(StringMap(limits.maxEnvVars)),
    metadata: Type.Optional(StringMap(limits.maxMetadataEntries)),
    /** Kill the sandbox this long after it starts; 0 means never. Default 5 minutes. */
    timeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: limits.maxTimeoutMs })),
    /** What happens when the timeout passes: `kill` (the default), `pause` or `stop`. */
    onTimeout: Type.Optional(TimeoutAction),
    /** false: the sandbox has no network (switch it on later with POST …/network). Default true. */
    internet: Type.Optional(Type.Boolean()),
    egress: Type.Optional(EgressRules),
    /** Host ports to publish (`-p 8080:80`); a port that cannot be bound refuses the create. */
    ports: Type.Optional(Type.Array(PortRequest, { maxItems: limits.maxPublishedPorts })),
    /** Volumes to mount (`-v data:/data`); one that does not exist is created with the default size. */
    volumes: Type.Optional(Type.Array(VolumeMountRequest, { maxItems: limits.maxVolumesPerSandbox })),
  },
  { additionalProperties: false },
);
export type CreateSandboxRequest = Static<typeof CreateSandboxRequest>;

export const SetTimeoutRequest = Type.Object(
  {
    /** The new lifetime, counted from now; 0 means none. */
    timeoutMs: Type.Integer({ minimum: 0, maximum: limits.maxTimeoutMs }),
  },
  { additionalProperties: false },
);
export type SetTimeoutRequest = Static<typeof SetTimeoutRequest>;

/** New resources for a stopped sandbox, used from its next start; the disk only grows. */
export const SetResourcesRequest = Type.Object(
  {
    vcpus: Type.Optional(Type.Integer({ minimum: limits.minVcpus, maximum: limits.maxVcpus })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: limits.minMemoryMiB, maximum: limits.maxMemoryMiB })),
    /** The root disk's new size; its filesystem is grown at the next start. */
    diskMiB: Type.Optional(Type.Integer({ minimum: 1, maximum: limits.maxDiskMiB })),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type SetResourcesRequest = Static<typeof SetResourcesRequest>;

export const ForkRequest = Type.Object(
  {
    /** How many sandboxes continue from this moment of the source. */
    count: Type.Optional(Type.Integer({ minimum: 1, maximum: limits.maxForks, default: 1 })),
  },
  { additionalProperties: false },
);
export type ForkRequest = Static<typeof ForkRequest>;

/** POST /v1/sandboxes/{id}/ssh: the sandbox's SSH server is running (on the guest's loopback, reached by a tunnel to port 22). */
export const SshServer = Type.Object({
  hostKeys: Type.Array(Type.String(), { description: 'public host keys, `ssh-ed25519 BASE64`, made for this sandbox alone' }),
});
export type SshServer = Static<typeof SshServer>;

export const SandboxList = Type.Object({ sandboxes: Type.Array(Sandbox) });
export type SandboxList = Static<typeof SandboxList>;

export const ExecRequest = Type.Object(
  {
    cmd: Type.Array(Type.String({ maxLength: 131072 }), { minItems: 1, maxItems: limits.maxCommandArgs }),
    env: Type.Optional(StringMap(limits.maxEnvVars)),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    user: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    /** Kill the command after this long; 0 or absent means no limit. */
    timeoutMs: Type.Optional(Type.Integer({ minimum: 0 })),
    /** Sent to the command's stdin, which is then closed. */
    stdin: Type.Optional(Type.String({ maxLength: 16 * 1024 * 1024 })),
  },
  { additionalProperties: false },
);
export type ExecRequest = Static<typeof ExecRequest>;

export const ExecResult = Type.Object({
  exitCode: Type.Integer(),
  /** Set when the command was ended by a signal (e.g. "SIGKILL"). */
  signal: Type.Optional(Type.String()),
  stdout: Type.String(),
  stderr: Type.String(),
  stdoutTruncated: Type.Boolean(),
  stderrTruncated: Type.Boolean(),
  durationMs: Type.Integer(),
});
export type ExecResult = Static<typeof ExecResult>;

/**
 * One line of the streaming exec response (application/x-ndjson). Output is
 * base64 so that binary output survives; the last line is always `exit` or
 * `error`.
 */
export const ExecEvent = Type.Union([
  Type.Object({ type: Type.Literal('start'), pid: Type.Integer() }),
  Type.Object({ type: Type.Literal('stdout'), data: Type.String({ contentEncoding: 'base64' }) }),
  Type.Object({ type: Type.Literal('stderr'), data: Type.String({ contentEncoding: 'base64' }) }),
  Type.Object({
    type: Type.Literal('exit'),
    exitCode: Type.Integer(),
    signal: Type.Optional(Type.String()),
    durationMs: Type.Integer(),
  }),
  Type.Object({
    type: Type.Literal('error'),
    code: Type.String(),
    message: Type.String(),
    hint: Type.Optional(Type.String()),
  }),
]);
export type ExecEvent = Static<typeof ExecEvent>;

export const Template = Type.Object({
  name: Type.String(),
  ready: Type.Boolean(),
  rootfsBytes: Type.Integer({ description: 'apparent size of the root filesystem image' }),
  defaultVcpus: Type.Integer(),
  defaultMemoryMiB: Type.Integer(),
  createdAt: Type.String({ format: 'date-time' }),
  /** Creates with the default resources restore this snapshot instead of booting. */
  warmSnapshot: Type.Union([Type.Literal('ready'), Type.Literal('building'), Type.Literal('failed'), Type.Literal('disabled')]),
});
export type Template = Static<typeof Template>;

export const TemplateList = Type.Object({ templates: Type.Array(Template) });
export type TemplateList = Static<typeof TemplateList>;

/** What this host offers for confining each sandbox's VMM, as the daemon probed it at its start. */
export const JailSupport = Type.Object({
  userNamespaces: Type.Boolean(),
  cgroup: Type.Object({
    /** 2: unified hierarchy; 1: one hierarchy per controller; none: memory, cpu and pids are not all available. */
    version: Type.Union([Type.Literal(1), Type.Literal(2), Type.Literal('none')]),
    controllers: Type.Array(Type.String()),
  }),
  /** The kernel can filter system calls (QEMU's `-sandbox`). */
  seccomp: Type.Boolean(),
  /** `bwrap --version` of the jail's launcher; absent when bubblewrap is not installed. */
  bubblewrap: Type.Optional(Type.String()),
});
export type JailSupport = Static<typeof JailSupport>;

export const DaemonInfo = Type.Object({
  version: Type.String(),
  pid: Type.Integer(),
  accel: Type.Union([Type.Literal('kvm'), Type.Literal('tcg')]),
  accelReason: Type.String(),
  qemuVersion: Type.String(),
  /** How sandboxes are networked: QEMU's user-mode stack, or TAP devices in namespaces (CAPSULE_NETWORK). */
  network: Type.Optional(Type.Union([Type.Literal('user'), Type.Literal('tap')])),
  /** Present when sandboxes are NOT kept off the host and private networks (user mode without root): what they reach, and why. */
  networkWarning: Type.Optional(Type.String({ maxLength: 1000 })),
  stateDir: Type.String(),
  runtimeDir: Type.String(),
  socketPath: Type.String(),
  /** host:port of the TCP listener (API keys required there), when CAPSULE_LISTEN is set. */
  tcpAddress: Type.Optional(Type.String()),
  /** The TCP listener's TLS certificate; absent when it serves plain HTTP (CAPSULE_LISTEN=http://…) or there is none. */
  tls: Type.Optional(
    Type.Object({
      /** SHA-256 of the certificate, `AB:CD:…`: what clients pin. */
      fingerprintSha256: Type.String(),
      certificatePath: Type.String(),
      /** Made by the daemon at its first start (true) or the operator's CAPSULE_TLS_CERT (false). */
      generated: Type.Boolean(),
    }),
  ),
  /** Sandbox ports are served by host name as `<port>-<sandboxId>.<domain>` (CAPSULE_DOMAIN). */
  domain: Type.String(),
  sandboxesRunning: Type.Integer(),
  /**
   * Each warm template's pool of VMs restored ahead of time: how many are ready, the size it fills up to now
   * (its minimum, grown by creates that found it empty, back to the minimum after a quiet period), and its claims.
   */
  warmPools: Type.Optional(
    Type.Array(
      Type.Object({
        template: Type.String(),
        ready: Type.Integer(),
        target: Type.Integer(),
        min: Type.Integer(),
        max: Type.Integer(),
        hits: Type.Integer(),
        misses: Type.Integer(),
      }),
    ),
  ),
  startedAt: Type.String({ format: 'date-time' }),
  /**
   * Whether each sandbox's QEMU runs jailed (CAPSULE_JAIL; off leaves it root and unconfined), and what the host
   * supports; always sent by this version, absent from daemons that predate the jail.
   */
  jail: Type.Optional(Type.Object({ enabled: Type.Boolean(), support: JailSupport })),
});
export type DaemonInfo = Static<typeof DaemonInfo>;

export const ApiKey = Type.Object({
  id: Type.String(),
  name: Type.String(),
  /** The key's first and last characters. */
  mask: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  lastUsedAt: Type.Optional(Type.String({ format: 'date-time' })),
});
export type ApiKey = Static<typeof ApiKey>;

export const ApiKeyList = Type.Object({ keys: Type.Array(ApiKey) });
export type ApiKeyList = Static<typeof ApiKeyList>;

export const CreateApiKeyRequest = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: limits.maxNameLength }),
    /** An existing e2b-form key ("e2b_" + hex) to register instead of generating one. */
    key: Type.Optional(Type.String({ maxLength: 140 })),
  },
  { additionalProperties: false },
);
export type CreateApiKeyRequest = Static<typeof CreateApiKeyRequest>;

/** The answer to a create: the only time the key itself is shown. */
export const CreatedApiKey = Type.Composite([ApiKey, Type.Object({ key: Type.String() })]);
export type CreatedApiKey = Static<typeof CreatedApiKey>;

export const ErrorResponse = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    hint: Type.Optional(Type.String()),
  }),
});

/** Where the daemon listens by default, and the variable that overrides it. */
export const DEFAULT_SOCKET_PATH = '/run/capsule/capsuled.sock';
export const SOCKET_ENV = 'CAPSULE_SOCKET';

/**
 * $CAPSULE_SOCKET, else `capsuled.sock` in $CAPSULE_RUNTIME_DIR, else
 * /run/capsule/capsuled.sock: the one rule the daemon and its clients share,
 * so that a private daemon and its clients agree.
 */
export function defaultSocketPath(env: Record<string, string | undefined>): string {
  const runtimeDir = env.CAPSULE_RUNTIME_DIR;
  return env[SOCKET_ENV] || (runtimeDir ? `${runtimeDir.replace(/\/+$/, '')}/capsuled.sock` : DEFAULT_SOCKET_PATH);
}

/**
 * capsuled's exit status when another capsuled already holds its state folder:
 * a client that launched it then waits for that one instead of failing.
 */
export const DAEMON_EXIT_ALREADY_RUNNING = 75;

// ---- Images and templates built from them ----

export const Image = Type.Object({
  digest: Type.String({ description: 'sha256 digest of the linux/amd64 manifest: the image’s identity' }),
  refs: Type.Array(Type.String(), { description: 'references that name this image, e.g. localhost:5000/app:1.0' }),
  sizeBytes: Type.Integer({ description: 'compressed size of its layers' }),
  layers: Type.Integer(),
  source: Type.Union([Type.Literal('registry'), Type.Literal('archive')]),
  env: Type.Array(Type.String(), { description: 'the image config’s Env' }),
  workingDir: Type.Optional(Type.String()),
  user: Type.Optional(Type.String()),
  entrypoint: Type.Optional(Type.Array(Type.String())),
  cmd: Type.Optional(Type.Array(Type.String())),
  templates: Type.Array(Type.String(), { description: 'templates built from this image' }),
  createdAt: Type.String({ format: 'date-time' }),
});
export type Image = Static<typeof Image>;

export const ImageList = Type.Object({ images: Type.Array(Image) });
export type ImageList = Static<typeof ImageList>;

export const PullImageRequest = Type.Object(
  {
    ref: Type.String({ minLength: 1, maxLength: 512, description: '[registry/]repository[:tag][@sha256:digest]' }),
    username: Type.Optional(Type.String({ maxLength: 256 })),
    password: Type.Optional(Type.String({ maxLength: 8192 })),
  },
  { additionalProperties: false },
);
export type PullImageRequest = Static<typeof PullImageRequest>;

export const ImportImageRequest = Type.Object(
  {
    path: Type.String({
      minLength: 1,
      maxLength: 4096,
      description: 'a `docker save` tarball, an OCI archive or an OCI layout folder on the daemon’s host',
    }),
    tag: Type.Optional(
      Type.String({ minLength: 1, maxLength: 512, description: 'reference to name the image by (default: the one the archive names)' }),
    ),
  },
  { additionalProperties: false },
);
export type ImportImageRequest = Static<typeof ImportImageRequest>;

/**
 * One line of a pull or import's application/x-ndjson answer: `resolved`
 * (the layers to fetch), `progress` per layer, `unpacked` as each layer is
 * unpacked into the image's root filesystem, `done` with the image, or
 * `error`. The last line is always `done` or `error`.
 */
export const ImageEvent = Type.Union([
  Type.Object({
    type: Type.Literal('resolved'),
    digest: Type.String(),
    layers: Type.Array(Type.Object({ digest: Type.String(), sizeBytes: Type.Integer() })),
  }),
  Type.Object({ type: Type.Literal('progress'), digest: Type.String(), doneBytes: Type.Integer(), totalBytes: Type.Integer() }),
  Type.Object({
    type: Type.Literal('unpacked'),
    index: Type.Integer({ description: 'layers are unpacked in order, while later ones download' }),
    layers: Type.Integer(),
  }),
  Type.Object({ type: Type.Literal('done'), image: Image }),
  Type.Object({ type: Type.Literal('error'), code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) }),
]);
export type ImageEvent = Static<typeof ImageEvent>;

export const CreateTemplateRequest = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$', description: 'lower-case letters, digits, `_`, `.` and `-`' }),
    image: Type.String({ minLength: 1, maxLength: 512, description: 'a reference or digest of an image in the store' }),
    vcpus: Type.Optional(Type.Integer({ minimum: limits.minVcpus, maximum: limits.maxVcpus })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: limits.minMemoryMiB, maximum: limits.maxMemoryMiB })),
    start: Type.Optional(
      // The literal first: Fastify's validator would otherwise coerce "image" into ["image"].
      Type.Union([Type.Literal('image'), Type.Array(Type.String({ maxLength: 65536 }), { minItems: 1, maxItems: 1024 })], {
        description:
          'the start command (argv), run in the background before the warm snapshot; `image`: the image config’s Entrypoint + Cmd',
      }),
    ),
    ready: Type.Optional(
      Type.Array(Type.String({ maxLength: 65536 }), {
        minItems: 1,
        maxItems: 1024,
        description: 'the ready check (argv), retried until it exits 0; needs start',
      }),
    ),
    readyTimeoutMs: Type.Optional(
      Type.Integer({ minimum: 1000, maximum: 30 * 60_000, description: 'how long the ready check is retried (default 60 s)' }),
    ),
  },
  { additionalProperties: false },
);
export type CreateTemplateRequest = Static<typeof CreateTemplateRequest>;

/** `GET /v1/templates/{name}`: a template with where it came from and what its VM runs. */
export const TemplateDetails = Type.Composite([
  Template,
  Type.Object({
    source: Type.Union([Type.Literal('base'), Type.Literal('image'), Type.Literal('capsulefile')], {
      description: '`base`: built by capsuled prepare; `image`: template create --image; `capsulefile`: template build',
    }),
    from: Type.Optional(Type.String({ description: 'the image reference or the Capsulefile’s FROM' })),
    imageDigest: Type.Optional(Type.String()),
    startCommand: Type.Optional(Type.Array(Type.String(), { description: 'START: run in the background before the warm snapshot' })),
    readyCommand: Type.Optional(Type.Array(Type.String(), { description: 'READY: retried until it exits 0 before the warm snapshot' })),
    readyTimeoutMs: Type.Optional(Type.Integer()),
    env: Type.Record(Type.String(), Type.String()),
    user: Type.Optional(Type.String()),
    workdir: Type.Optional(Type.String()),
    rootfs: Type.String({ description: 'path of the root filesystem image on the daemon’s host' }),
    rootfsDiskBytes: Type.Integer({ description: 'disk space the root filesystem image takes (it is sparse)' }),
    warmSnapshotError: Type.Optional(Type.String({ description: 'why the warm snapshot failed (e.g. READY never passed)' })),
    warmSnapshotDiskBytes: Type.Optional(Type.Integer({ description: 'disk space of the warm snapshot (memory, device state, disk)' })),
  }),
]);
export type TemplateDetails = Static<typeof TemplateDetails>;

const DiskUsageItem = Type.Object({
  count: Type.Integer({ minimum: 0, description: 'how many there are' }),
  diskBytes: Type.Integer({ minimum: 0, description: 'disk space their files take (allocated blocks; a file linked twice counts once)' }),
});

/**
 * `GET /v1/system/df`: disk space the daemon's data takes, by kind: sandboxes
 * (overlays, paused memory, console logs), templates (root filesystems, warm
 * snapshots), images (blobs, unpacked root filesystems), volumes (with their
 * snapshots) and the build cache (cached build steps, e2b's uploaded build files).
 */
export const DiskUsage = Type.Object({
  sandboxes: DiskUsageItem,
  templates: DiskUsageItem,
  images: DiskUsageItem,
  volumes: DiskUsageItem,
  buildCache: DiskUsageItem,
  totalBytes: Type.Integer({ minimum: 0 }),
});
export type DiskUsage = Static<typeof DiskUsage>;

/** `GET /v1/system/config`: each daemon setting as the running daemon took it, and where it came from. */
export const DaemonSettingsReport = Type.Object({
  /** The config file the daemon read at its start; absent when it read none. */
  configFile: Type.Optional(Type.String()),
  settings: Type.Array(
    Type.Object({
      name: Type.String(),
      /** The value as written (environment or file), else the default; empty when unset with no default. */
      value: Type.String(),
      source: Type.Union([Type.Literal('environment'), Type.Literal('config file'), Type.Literal('default')]),
      /** What the daemon made of it where that differs from the text: `auto` resolved, an unset budget computed, port 0 bound. */
      effective: Type.Optional(Type.String()),
    }),
  ),
});
export type DaemonSettingsReport = Static<typeof DaemonSettingsReport>;

/** `POST /v1/images/prune`: what garbage collection removed. */
export const PruneResult = Type.Object({
  blobs: Type.Integer({ description: 'blobs (manifests, configs, layers) no stored image uses' }),
  rootfs: Type.Integer({ description: 'unpacked root filesystems no image or template uses' }),
  buildSteps: Type.Integer({ description: 'cached build steps' }),
  bytes: Type.Integer({ description: 'disk space freed' }),
});
export type PruneResult = Static<typeof PruneResult>;

export const BuildTemplateRequest = Type.Object(
  {
    name: CreateTemplateRequest.properties.name,
    capsulefile: Type.String({ minLength: 1, maxLength: 262144, description: 'the Capsulefile’s text' }),
    contextDir: Type.Optional(
      Type.String({ minLength: 1, maxLength: 4096, description: 'folder on the daemon’s host that COPY sources are read from' }),
    ),
  },
  { additionalProperties: false },
);
export type BuildTemplateRequest = Static<typeof BuildTemplateRequest>;

/** `POST /v1/sandboxes/{id}/snapshot`: the sandbox's current state becomes a new warm template. */
export const SnapshotRequest = Type.Object(
  {
    template: CreateTemplateRequest.properties.name,
  },
  { additionalProperties: false },
);
export type SnapshotRequest = Static<typeof SnapshotRequest>;

/**
 * One line of a template build's application/x-ndjson answer: `step` as each
 * instruction starts (or, `cached`, is taken from an earlier build), `log` with its output, then `done` with the template or
 * `error` (a failing step's code is `build_step_failed`, its output quoted).
 */
export const BuildEvent = Type.Union([
  Type.Object({
    type: Type.Literal('step'),
    index: Type.Integer(),
    instruction: Type.String(),
    cached: Type.Optional(Type.Boolean({ description: 'the step was not run: its result was cached by an earlier build' })),
  }),
  Type.Object({ type: Type.Literal('log'), stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr')]), text: Type.String() }),
  Type.Object({ type: Type.Literal('done'), template: Template }),
  Type.Object({ type: Type.Literal('error'), code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) }),
]);
export type BuildEvent = Static<typeof BuildEvent>;
