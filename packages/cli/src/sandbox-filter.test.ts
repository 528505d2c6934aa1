import type { Sandbox } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { collectFilter, collectLabelFilter, filterSandboxes, lastCreated, mergeFilters, parseLimit } from './sandbox-filter.js';

const sandbox = (id: string, state: Sandbox['state'], template: string, metadata: Record<string, string>, name: string | null = null) =>
  ({ id, state, template, metadata, name, createdAt: `2026-12-07T10:00:0${id.at(-1)}Z` }) as Sandbox;
const all = [
  sandbox('sb_aa1', 'running', 'base', { team: 'web' }, 'one'),
  sandbox('sb_aa2', 'paused', 'base', { team: 'db' }),
  sandbox('sb_bb3', 'running', 'python', {}),
];
const ids = (filters: string[]) =>
  filterSandboxes(
    all,
    filters.reduce((acc, text) => collectFilter(text, acc), {}),
  ).map((s) => s.id);

describe('ls --filter', () => {
  it('ORs values of one key and ANDs different keys, as docker does', () => {
    expect(ids(['state=running'])).toEqual(['sb_aa1', 'sb_bb3']);
    expect(ids(['state=running', 'state=paused'])).toEqual(['sb_aa1', 'sb_aa2', 'sb_bb3']);
    expect(ids(['state=running', 'template=base'])).toEqual(['sb_aa1']);
    expect(ids(['id=sb_aa', 'name=one'])).toEqual(['sb_aa1']);
  });

  it('matches labels (the metadata) by key or by key and value', () => {
    expect(ids(['label=team'])).toEqual(['sb_aa1', 'sb_aa2']);
    expect(ids(['label=team=db'])).toEqual(['sb_aa2']);
    expect(ids(['label=toString'])).toEqual([]);
  });

  it('refuses unknown keys and a missing value', () => {
    expect(() => collectFilter('status=running')).toThrow(/KEY one of id, name, state, template, label/);
    expect(() => collectFilter('state=')).toThrow(/KEY=VALUE/);
    expect(() => collectFilter('running')).toThrow(/KEY=VALUE/);
  });
});

describe('ls -m and -n', () => {
  it('reads -m K=V as a label filter, its values alternatives to --filter label=', () => {
    const metadata = collectLabelFilter('team=db');
    expect(filterSandboxes(all, mergeFilters(undefined, metadata)).map((s) => s.id)).toEqual(['sb_aa2']);
    const both = mergeFilters(collectFilter('label=team=web'), metadata);
    expect(filterSandboxes(all, both).map((s) => s.id)).toEqual(['sb_aa1', 'sb_aa2']);
    expect(filterSandboxes(all, mergeFilters(undefined, undefined))).toHaveLength(3);
    expect(() => collectLabelFilter('team')).toThrow(/KEY=VALUE/);
  });

  it('keeps the n created last, newest first', () => {
    expect(lastCreated(all, 2).map((s) => s.id)).toEqual(['sb_bb3', 'sb_aa2']);
    expect(lastCreated(all, undefined).map((s) => s.id)).toEqual(['sb_aa1', 'sb_aa2', 'sb_bb3']);
    expect(() => parseLimit('0')).toThrow(/at least 1/);
    expect(() => parseLimit('two')).toThrow(/at least 1/);
  });
});
