// envd's `GET /metrics`: CPU count and use, memory and root-disk size and use,
// with envd's JSON field names. Cheap and bounded: two small /proc files and
// one statfs per call; never spawns anything and keeps one CPU sample.

import { readFile, statfs } from 'node:fs/promises';
import type { AgentMetrics } from '@capsule/protocol/agent';
import type { PlainHttpHandler } from './plain-http.js';

const MIB = 1024 * 1024;

interface CpuSample {
  /** All jiffies spent, busy or not. */
  total: number;
  /** Jiffies spent idle or waiting for I/O. */
  idle: number;
}

export interface MetricsSources {
  procStat: string;
  procMeminfo: string;
  /** The filesystem whose size and use are reported. */
  disk: string;
}

const defaultSources: MetricsSources = { procStat: '/proc/stat', procMeminfo: '/proc/meminfo', disk: '/' };

/** The aggregate `cpu` line of /proc/stat and the number of `cpuN` lines (logical CPUs). */
export function parseProcStat(text: string): { sample: CpuSample; cpuCount: number } {
  let sample: CpuSample | undefined;
  let cpuCount = 0;
  for (const line of text.split('\n')) {
    if (/^cpu\d+\s/.test(line)) cpuCount += 1;
    else if (line.startsWith('cpu ')) {
      // user nice system idle iowait irq softirq steal (guest time is already in user and nice).
      const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
      if (fields.length < 4 || fields.some((value) => !Number.isFinite(value))) throw new Error('/proc/stat has a malformed cpu line');
      sample = { total: fields.reduce((sum, value) => sum + value, 0), idle: (fields[3] ?? 0) + (fields[4] ?? 0) };
    }
  }
  if (!sample) throw new Error('/proc/stat has no cpu line');
  return { sample, cpuCount: Math.max(cpuCount, 1) };
}

/** MemTotal and MemAvailable of /proc/meminfo, in bytes. */
export function parseMeminfo(text: string): { total: number; available: number } {
  const kib = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text);
    if (!match) throw new Error(`/proc/meminfo has no ${name}`);
    return Number(match[1]) * 1024;
  };
  return { total: kib('MemTotal'), available: kib('MemAvailable') };
}

/** Busy share of the CPU time between two samples, in percent with two decimals (envd's rounding). */
export function cpuUsedPercent(previous: CpuSample, current: CpuSample): number {
  const total = current.total - previous.total;
  if (total <= 0) return 0;
  const busy = total - (current.idle - previous.idle);
  return Math.round(Math.min(Math.max(busy / total, 0), 1) * 10_000) / 100;
}

export function createMetricsRoute(sources: MetricsSources = defaultSources): PlainHttpHandler {
  // Like envd (gopsutil's interval 0): CPU use since the previous call, the first one since the agent started.
  let previous: CpuSample | undefined;
  const sampleCpu = async () => parseProcStat(await readFile(sources.procStat, 'utf8'));
  const started = sampleCpu().then(
    ({ sample }) => (previous ??= sample),
    () => undefined,
  );

  return async (request, response) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' });
      response.end();
      return;
    }
    await started;
    const [{ sample, cpuCount }, meminfo, disk] = await Promise.all([
      sampleCpu(),
      readFile(sources.procMeminfo, 'utf8').then(parseMeminfo),
      statfs(sources.disk),
    ]);
    const cpuPercent = cpuUsedPercent(previous ?? { total: 0, idle: 0 }, sample);
    previous = sample;
    const memUsed = Math.max(meminfo.total - meminfo.available, 0);
    const diskTotal = disk.blocks * disk.bsize;
    const metrics: AgentMetrics = {
      ts: Math.floor(Date.now() / 1000),
      cpu_count: cpuCount,
      cpu_used_pct: cpuPercent,
      mem_total_mib: Math.floor(meminfo.total / MIB),
      mem_used_mib: Math.floor(memUsed / MIB),
      mem_total: meminfo.total,
      mem_used: memUsed,
      disk_used: Math.max(diskTotal - disk.bavail * disk.bsize, 0),
      disk_total: diskTotal,
    };
    const body = JSON.stringify(metrics);
    response.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    });
    if (request.method === 'HEAD') response.end();
    else response.end(body);
  };
}
