export * from './api.js';
export * from './errors.js';
export * from './daemon-settings.js';
export * from './metrics.js';
export * from './events.js';
export * from './dashboard.js';
export * from './workload-spec.js';
export * from './workloads.js';
