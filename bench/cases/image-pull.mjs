// Pulling an OCI image and converting it to a root filesystem. The daemon has
// no image store yet; whoever lands it replaces this file with the real case.
import { routeMissing } from '../lib/api-routes.mjs';

export default {
  name: 'image-pull',
  position: 70,
  results: [{ id: 'image-pull', title: 'image pull and conversion to a root filesystem', unit: 'ms' }],
  async unavailable(ctx) {
    return routeMissing(await ctx.daemon('pool'), /images/, 'the daemon cannot pull images yet (no images API)');
  },
  async run() {
    throw new Error('the daemon now has an images API: write this case');
  },
};
