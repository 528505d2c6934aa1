// `capsule volume create|ls|inspect|rm|resize|snapshot|snapshots|restore|export|import`: named disks that outlive
// sandboxes (attached with `-v NAME:/PATH[:ro]` at create or run). `ls` prints
// a table or -o json|yaml; `inspect` the volume and the sandboxes that hold it;
// export and import stream a qcow2 image to or from a file or stdio, with progress.
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { InvalidArgumentError, type VolumeInfo, type VolumeSnapshotInfo } from '@capsule/sdk';
import { Command } from 'commander';
import { ByteProgress } from '../byte-progress.js';
import { CliContext } from '../cli-context.js';
import { formatAge, formatBytes, keyValueLines, renderTable } from '../human-format.js';
import { parseVolumeSize } from '../option-parsers.js';
import { addGlobalOptions } from './global-options.js';
import { addOutputOptions, printOutput, type OutputOptions } from '../output-format.js';

/** Who holds a volume: `sb_x:/data`, `name:/data (ro)`, or `-`. */
function holders(volume: VolumeInfo): string {
  if (volume.attachments.length === 0) return '-';
  return volume.attachments.map((a) => `${a.sandboxName ?? a.sandboxId}:${a.mount}${a.readOnly ? ' (ro)' : ''}`).join(', ');
}

export function volumeTable(volumes: readonly VolumeInfo[], now: number = Date.now()): string {
  return renderTable(
    ['NAME', 'SIZE', 'ON DISK', 'ATTACHED TO', 'AGE'],
    volumes.map((volume) => [
      volume.name,
      formatBytes(volume.sizeBytes),
      formatBytes(volume.diskBytes),
      holders(volume),
      formatAge(volume.createdAt, now),
    ]),
  );
}

export function describeVolume(volume: VolumeInfo, now: number = Date.now()): string {
  return `${keyValueLines([
    ['Name', volume.name],
    ['Size', `${formatBytes(volume.sizeBytes)} (${formatBytes(volume.diskBytes)} on disk)`],
    ['Attached to', holders(volume)],
    ['Created', `${volume.createdAt} (${formatAge(volume.createdAt, now)} ago)`],
  ]).join('\n')}\n`;
}

function createCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('create'))
      .description('Create an empty volume (ext4, a sparse file on the daemon host) and print its name')
      .argument('<name>', 'lower-case letters, digits and -')
      .option('-s, --size <size>', 'its size (512M, 10G, 1T)', parseVolumeSize, '10G')
      .action(async (name: string, options: { size: string } & OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const volume = await client.createVolume(name, options.size);
        printOutput(volume, options, { table: () => `${volume.name}\n` });
      }),
  );
}

function listCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(
      new Command('ls').description('List volumes and the sandboxes that hold them').option('-q, --quiet', 'print only names'),
    ).action(async (options: OutputOptions & { quiet?: boolean }, command: Command) => {
      const client = await CliContext.of(command).daemonClient();
      const volumes = await client.listVolumes();
      if (options.quiet) process.stdout.write(volumes.map((volume) => `${volume.name}\n`).join(''));
      else printOutput(volumes, options, { table: () => volumeTable(volumes) });
    }),
  );
}

function inspectCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(
      new Command('inspect').description('Show a volume: its size, disk use and the sandboxes that hold it').argument('<name>'),
    ).action(async (name: string, options: OutputOptions, command: Command) => {
      const client = await CliContext.of(command).daemonClient();
      const volume = await client.getVolume(name);
      printOutput(volume, options, { table: () => describeVolume(volume) });
    }),
  );
}

function removeCommand(): Command {
  return addGlobalOptions(
    new Command('rm')
      .description('Delete volumes and their data (refused while a running, paused or stopped sandbox holds one)')
      .argument('<name...>')
      .action(async (names: string[], _options: unknown, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        for (const name of names) {
          await client.deleteVolume(name);
          process.stdout.write(`${name}\n`);
        }
      }),
  );
}

function resizeCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('resize'))
      .description('Grow a volume and its filesystem (only while no sandbox holds it)')
      .argument('<name>')
      .argument('<size>', 'the new size (larger than now): 20G, 512M', parseVolumeSize)
      .action(async (name: string, size: string, options: OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const volume = await client.resizeVolume(name, size);
        printOutput(volume, options, { table: () => `${volume.name}: ${formatBytes(volume.sizeBytes)}\n` });
      }),
  );
}

function snapshotCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('snapshot'))
      .description('Copy a volume as it is now (refused while a sandbox holds it read-write); prints the snapshot name')
      .argument('<name>')
      .option('--name <snapshot>', 'name of the snapshot (default: the time, YYYYMMDD-HHMMSS)')
      .action(async (name: string, options: { name?: string } & OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const snapshot = await client.snapshotVolume(name, options.name);
        printOutput(snapshot, options, { table: () => `${snapshot.name}\n` });
      }),
  );
}

export function snapshotTable(snapshots: readonly VolumeSnapshotInfo[], now: number = Date.now()): string {
  return renderTable(
    ['SNAPSHOT', 'SIZE', 'ON DISK', 'AGE'],
    snapshots.map((s) => [s.name, formatBytes(s.sizeBytes), formatBytes(s.diskBytes), formatAge(s.createdAt, now)]),
  );
}

function snapshotsCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('snapshots').description("List a volume's snapshots").argument('<name>')).action(
      async (name: string, options: OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const snapshots = await client.listVolumeSnapshots(name);
        printOutput(snapshots, options, { table: () => snapshotTable(snapshots) });
      },
    ),
  );
}

function restoreCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('restore'))
      .description('Make a new volume from a snapshot (the snapshot’s volume is left as it is); prints its name')
      .argument('<name>', 'the volume the snapshot was taken of')
      .argument('<snapshot>')
      .requiredOption('--as <volume>', 'name of the new volume')
      .action(async (name: string, snapshot: string, options: { as: string } & OutputOptions, command: Command) => {
        const client = await CliContext.of(command).daemonClient();
        const volume = await client.restoreVolumeSnapshot(name, snapshot, options.as);
        printOutput(volume, options, { table: () => `${volume.name}\n` });
      }),
  );
}

function exportCommand(): Command {
  return addGlobalOptions(
    new Command('export')
      .description('Write a volume as a compressed qcow2 image (refused while a sandbox holds it read-write)')
      .argument('<name>')
      .option('-o, --output <file>', 'the file to write (- or none: stdout)')
      .action(async (name: string, options: { output?: string }, command: Command) => {
        const context = CliContext.of(command);
        const path = options.output === '-' ? undefined : options.output;
        if (path === undefined && process.stdout.isTTY)
          throw new InvalidArgumentError('invalid_argument', 'refusing to write a disk image to a terminal', {
            hint: `give -o FILE, or redirect: capsule volume export ${name} > ${name}.qcow2`,
          });
        const client = await context.daemonClient();
        const { sizeBytes, image } = await client.exportVolume(name);
        const progress = new ByteProgress(`Exporting ${name}`, sizeBytes, { enabled: context.progress.enabled });
        const output = path === undefined ? process.stdout : fs.createWriteStream(path, { mode: 0o600 });
        try {
          await pipeline(progress.count(image), output);
        } catch (err) {
          // A cut-off image is no image: the file goes rather than staying half written.
          if (path !== undefined) fs.rmSync(path, { force: true });
          throw err;
        }
        progress.finish();
      }),
  );
}

function importCommand(): Command {
  return addGlobalOptions(
    addOutputOptions(new Command('import'))
      .description('Make a new volume from an image `volume export` wrote; prints its name')
      .argument('<name>', 'name of the new volume')
      .argument('[file]', 'the image (- or none: stdin)')
      .action(async (name: string, file: string | undefined, options: OutputOptions, command: Command) => {
        const context = CliContext.of(command);
        const path = file === '-' ? undefined : file;
        if (path === undefined && process.stdin.isTTY)
          throw new InvalidArgumentError('invalid_argument', 'no image to read: stdin is a terminal', {
            hint: `give the file: capsule volume import ${name} ${name}.qcow2`,
          });
        const input = path === undefined ? process.stdin : fs.createReadStream(path);
        const sizeBytes = path === undefined ? undefined : fs.statSync(path).size;
        const client = await context.daemonClient();
        const progress = new ByteProgress(`Importing ${name}`, sizeBytes, { enabled: context.progress.enabled });
        const volume = await client.importVolume(name, progress.count(input));
        progress.finish();
        printOutput(volume, options, { table: () => `${volume.name}\n` });
      }),
  );
}

export function volumeCommand(): Command {
  return new Command('volume')
    .description('Manage volumes: disks that outlive sandboxes')
    .addCommand(createCommand())
    .addCommand(listCommand())
    .addCommand(inspectCommand())
    .addCommand(removeCommand())
    .addCommand(resizeCommand())
    .addCommand(snapshotCommand())
    .addCommand(snapshotsCommand())
    .addCommand(restoreCommand())
    .addCommand(exportCommand())
    .addCommand(importCommand());
}
