import { mount } from 'svelte';
import './app.css';
import App from './App.svelte';
import { start } from './lib/store/sync';

start();
const app = mount(App, { target: document.getElementById('app')! });
export default app;
