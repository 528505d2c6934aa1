// The dashboard's entry: mounts the app into index.html's #app.
import { render } from 'preact';
import { App } from './app.js';
import './style.css';

render(<App />, document.getElementById('app')!);
